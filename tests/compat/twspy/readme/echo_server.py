# From twspy's README (https://github.com/taddeus/twspy, 0.8; BSD-3-Clause, Copyright (c) 2013 Taddeus Kroes).
# Changed: "import twspy" -> "import ws4web.compat.twspy as twspy", and Python 2 print statements
# -> print() calls. Run by tests/compat/twspy/test_readme.py, which replaces the address
# (host '' and port 8000) with 127.0.0.1 and a free port.
# ruff: noqa
import ws4web.compat.twspy as twspy

class EchoServer(twspy.Server):
    def onopen(self, client):
        print('Client %s connected' % client)

    def onmessage(self, client, message):
        print('Received message "%s"' % message.payload)
        client.send(twspy.TextMessage(message.payload))

    def onclose(self, client):
        print('Client %s disconnected' % client)

EchoServer(('', 8000)).run()
