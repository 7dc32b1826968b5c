import sys

from edgecv.models.convert.convert import main

sys.exit(main())
