# From twspy's README (https://github.com/taddeus/twspy, 0.8; BSD-3-Clause, Copyright (c) 2013 Taddeus Kroes).
# Changed: "import twspy" -> "import ws4web.compat.twspy as twspy", and Python 2 print statements
# -> print() calls. Run by tests/compat/twspy/test_readme.py, which replaces the address
# (host '' and port 8000) with 127.0.0.1 and a free port.
# ruff: noqa
import ws4web.compat.twspy as twspy, socket
sock = twspy.websocket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(('', 8000))
sock.listen(5)

client = sock.accept()
client.send(twspy.Frame(twspy.OPCODE_TEXT, 'Hello, Client!'))
frame = client.recv()
