# From twspy's README (https://github.com/taddeus/twspy, 0.8; BSD-3-Clause, Copyright (c) 2013 Taddeus Kroes).
# Changed: "import twspy" -> "import ws4web.compat.twspy as twspy", and Python 2 print statements
# -> print() calls. Run by tests/compat/twspy/test_readme.py, which replaces the address
# (host '' and port 8000) with 127.0.0.1 and a free port.
# ruff: noqa
import ws4web.compat.twspy as twspy

class EchoConnection(twspy.Connection):
    def onopen(self):
        print('Connection opened at %s:%d' % self.sock.getpeername())

    def onmessage(self, message):
        print('Received message "%s"' % message.payload)
        self.send(twspy.TextMessage(message.payload))

    def onclose(self, message):
        print('Connection closed')

server = twspy.websocket()
server.bind(('', 8000))
server.listen(5)

while True:
    client, addr = server.accept()
    EchoConnection(client).receive_forever()
