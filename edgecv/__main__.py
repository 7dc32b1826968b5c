from edgecv.cli import main

raise SystemExit(main())
