#!/usr/bin/env python3
"""Outbound capture in the lab: a "remote" server, a transparent proxy and a client.

Node has no getsockopt, so the proxy is Python, written exactly as a proxy
behind iptables REDIRECT is: it asks the kernel for the original destination
of each accepted connection with getsockopt(SOL_IP, SO_ORIGINAL_DST) (IPv4) or
getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) (IPv6), connects there, and relays.

  outbound.py server --port 8080 [--port 8081]        answers each connection with one line, dual stack
  outbound.py proxy --port 15001 [--mark N] [--uid N] [--log]
                                                      127.0.0.1 and ::1; prints one JSON line per connection with --log
  outbound.py client HOST PORT [--count N] [--hold] [--mark N]
                                                      prints one JSON line: what came back

Used by the kernel tests, the outbound demo and the end-to-end benchmark.
"""
import argparse
import asyncio
import ipaddress
import json
import os
import socket
import struct
import sys

SO_ORIGINAL_DST = 80       # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv6/ip6_tables.h>
SO_MARK = 36               # <asm-generic/socket.h>; Python has no constant for it
SOL_IPV6 = socket.IPPROTO_IPV6  # 41; Python names the level only as the protocol


def original_destination(sock):
    """(host, port) the connection was made to, as the kernel (or intercept) answers it."""
    if sock.family == socket.AF_INET:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, packed = struct.unpack_from("!2xH4s", raw)
        return socket.inet_ntop(socket.AF_INET, packed), port
    raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
    port, packed = struct.unpack_from("!2xH4x16s", raw)
    return socket.inet_ntop(socket.AF_INET6, packed), port


async def relay(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            writer.close()


async def serve_proxy(args):
    async def handle(reader, writer):
        sock = writer.get_extra_info("socket")
        try:
            host, port = original_destination(sock)
        except OSError as error:
            print(json.dumps({"error": f"getsockopt: {error.strerror}"}), flush=True)
            writer.close()
            return
        if args.log:
            print(json.dumps({"original": [host, port], "peer": list(writer.get_extra_info("peername")[:2])}), flush=True)
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        upstream = socket.socket(family, socket.SOCK_STREAM)
        if args.mark:
            upstream.setsockopt(socket.SOL_SOCKET, SO_MARK, args.mark)
        upstream.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(upstream, (host, port))
        except OSError as error:
            upstream.close()
            print(json.dumps({"error": f"upstream {host}:{port}: {error.strerror}"}), flush=True)
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        if args.tag:
            writer.write(f"proxy {host} {port}\n".encode())
        await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
        writer.close()
        up_writer.close()

    servers = [await asyncio.start_server(handle, host, args.port, reuse_address=True, backlog=1024) for host in ("127.0.0.1", "::1")]
    if args.uid is not None:  # bound: now run as the proxy's own user, the one the policy exempts
        os.setgroups([])
        os.setgid(args.uid)
        os.setuid(args.uid)
    print(f"proxy ready on {args.port}", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


async def serve_remote(args):
    async def handle(reader, writer):
        local = writer.get_extra_info("sockname")
        peer = writer.get_extra_info("peername")
        await reader.readline()
        writer.write(f"server {local[0]} {local[1]} peer {peer[0]}\n".encode())
        await writer.drain()
        writer.close()

    servers = []
    for port in args.port:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        servers.append(await asyncio.start_server(handle, sock=sock, backlog=1024))
    print("server ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def exchange(host, port, mark, hold=False):
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if mark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.settimeout(5)
        sock.connect((host, port))
        if hold:  # connected: wait to be told to go on (a connection made before apply)
            print(json.dumps({"connected": True}), flush=True)
            sys.stdin.readline()
        sock.sendall(b"hello\n")
        chunks = []
        while data := sock.recv(4096):
            chunks.append(data)
        return b"".join(chunks).decode()


def client(args):
    answered, failures, last = 0, [], None
    for _ in range(args.count):
        try:
            last = exchange(args.host, args.port, args.mark, args.hold)
            if last.strip():
                answered += 1
            else:
                failures.append("empty response")
        except OSError as error:
            failures.append(str(error))
    print(json.dumps({"answered": answered, "failures": failures[:5], "failed": len(failures), "response": last}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server")
    server.add_argument("--port", type=int, action="append", required=True)
    proxy = commands.add_parser("proxy")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--mark", type=int, default=0, help="SO_MARK on upstream sockets (the policy's exempt mark)")
    proxy.add_argument("--uid", type=int, help="run as this uid once listening (the policy's exempt uid)")
    proxy.add_argument("--log", action="store_true", help="print each connection's original destination")
    proxy.add_argument("--no-tag", dest="tag", action="store_false", help="relay only: no 'proxy HOST PORT' line to the client")
    run = commands.add_parser("client")
    run.add_argument("host")
    run.add_argument("port", type=int)
    run.add_argument("--count", type=int, default=1)
    run.add_argument("--hold", action="store_true")
    run.add_argument("--mark", type=int, default=0)
    args = parser.parse_args()
    if args.command == "client":
        client(args)
    else:
        try:
            asyncio.run(serve_proxy(args) if args.command == "proxy" else serve_remote(args))
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
