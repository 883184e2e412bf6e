from massive_fetcher.cli import main

raise SystemExit(main())
