from rota.cli.main import main

raise SystemExit(main())
