"""The chat demo on CherryPy, from a checkout: the program is ws4web/demo/cherrypy_app.py.

    python3 examples/chat/cherrypy_app.py [--port 8080] [--host 127.0.0.1]

is ``ws4web serve --adapter cherrypy`` without installing ws4web. Then open the printed
URL (http://127.0.0.1:8080/) in two browser tabs; Ctrl-C stops it.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from ws4web.demo.cherrypy_app import main

if __name__ == "__main__":
    main()
