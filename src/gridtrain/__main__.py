from gridtrain.cli import main

raise SystemExit(main())
