#!/usr/bin/env python3
"""A SO_REUSEPORT group of echo listeners, as a proxy with one listener per
worker (Envoy) has: Node 20's net.Server cannot set SO_REUSEPORT (its
reusePort option came with Node 22.12 and 23.1). Speaks lab/echo.ts's
protocol; each member answers with its own tag, "member-N".

    python3 lab/reuseport-echo.py PORT [MEMBERS]

Listens on 0.0.0.0:PORT with MEMBERS sockets (default 2), prints "ready".
"""
import json
import socket
import sys
import threading


def answer(connection: socket.socket, tag: str) -> None:
    local_address, local_port = connection.getsockname()[:2]
    with connection, connection.makefile("rwb") as stream:
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line == "close":
                return
            reply = {"tag": tag, "localAddress": local_address, "localPort": local_port, "line": line}
            stream.write((json.dumps(reply) + "\n").encode())
            stream.flush()


def serve(listener: socket.socket, tag: str) -> None:
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=answer, args=(connection, tag), daemon=True).start()


def main() -> None:
    port = int(sys.argv[1])
    members = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    listeners = []
    for _ in range(members):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(128)
        listeners.append(listener)
    threads = [threading.Thread(target=serve, args=(listener, f"member-{n}"), daemon=True) for n, listener in enumerate(listeners)]
    for thread in threads:
        thread.start()
    print(f"ready: {members} listeners on {port} in one SO_REUSEPORT group", flush=True)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
