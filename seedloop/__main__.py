from seedloop.cli import main

raise SystemExit(main())
