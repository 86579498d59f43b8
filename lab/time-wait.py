#!/usr/bin/env python3
"""Leaves a TCP 4-tuple in TIME_WAIT on its server side, as a proxy that
closes first does: connects CLIENT:CLIENT_PORT to SERVER:SERVER_PORT (two
addresses of this namespace), closes the server's end first, then the
client's, and exits once both FINs are exchanged. The server's socket is
then in TIME_WAIT for a minute; the client's port is free.

    python3 lab/time-wait.py SERVER SERVER_PORT CLIENT CLIENT_PORT
"""
import socket
import sys
import time

server_address, server_port, client_address, client_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

with socket.socket() as listener:
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((server_address, server_port))
    listener.listen()
    client = socket.socket()
    client.bind((client_address, client_port))
    client.connect((server_address, server_port))
    accepted, _ = listener.accept()
    accepted.close()
    if client.recv(1) != b"":  # the server's FIN
        sys.exit("expected the server to close")
    client.close()
    time.sleep(0.1)  # the client's FIN, and the server's last ACK
