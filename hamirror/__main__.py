from hamirror.cli.main import main

raise SystemExit(main())
