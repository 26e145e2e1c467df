"""`python -m proactive_delivery_tools.cli`: the same as the `proactive-delivery` command."""

from proactive_delivery_tools.cli import main

raise SystemExit(main())
