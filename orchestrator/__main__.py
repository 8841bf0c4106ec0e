import sys

from orchestrator.main import main

sys.exit(main())
