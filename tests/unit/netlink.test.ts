/**
 * rtnetlink in the agent's process (src/kernel/netlink.ts): the nsid
 * requests it sends and the answers it reads, against bytes as `ip` sends
 * them and as the kernel answered them (captured on this machine); how a
 * refusal is reported; and numberNamespaces over a directory that holds no
 * namespace (no namespace is made here: tests/e2e/watcher.test.ts gives
 * real ones ids).
 */
import assert from "node:assert/strict";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { CommandError, InterceptError } from "../../src/errors.js";
import { numberNamespaces } from "../../src/kernel/links.js";
import {
  decodeError,
  decodeMessages,
  decodeNsid,
  encodeNsidRequest,
  failure,
  NETNSA_FD,
  NETNSA_NSID,
  NETNSA_NSID_NOT_ASSIGNED,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NLMSG_ERROR,
  RouteSocket,
  RTM_GETNSID,
  RTM_NEWNSID,
} from "../../src/kernel/netlink.js";

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ""), "hex");

test("RTM_NEWNSID with NETNSA_FD and NETNSA_NSID -1, acked: `ip netns set NAME auto`'s request", () => {
  const request = encodeNsidRequest(RTM_NEWNSID, NLM_F_REQUEST | NLM_F_ACK, 7, [
    [NETNSA_FD, 5],
    [NETNSA_NSID, NETNSA_NSID_NOT_ASSIGNED],
  ]);
  assert.deepEqual(
    request,
    hex(`24000000 5800 0500 07000000 00000000
         00000000
         0800 0300 05000000
         0800 0100 ffffffff`),
  );
});

test("RTM_GETNSID with NETNSA_FD, no ack: `ip netns list`'s request for one name", () => {
  assert.deepEqual(
    encodeNsidRequest(RTM_GETNSID, NLM_F_REQUEST, 1, [[NETNSA_FD, 20]]),
    hex("1c000000 5a00 0100 01000000 00000000 00000000 0800 0300 14000000"),
  );
});

test("the kernel's answer to RTM_GETNSID: its NETNSA_NSID, -1 for none", () => {
  // As the kernel answered RTM_GETNSID for a namespace with no id here (port 0x416c).
  const [none, ...rest] = decodeMessages(hex("1c000000 5800 0000 01000000 6c410000 00000000 0800 0100 ffffffff"));
  assert.deepEqual(rest, []);
  assert.equal(none!.type, RTM_NEWNSID);
  assert.equal(none!.seq, 1);
  assert.equal(decodeNsid(none!), NETNSA_NSID_NOT_ASSIGNED);
  const [three] = decodeMessages(hex("1c000000 5800 0000 02000000 6c410000 00000000 0800 0100 03000000"));
  assert.equal(decodeNsid(three!), 3);
  const [bare] = decodeMessages(hex("14000000 5800 0000 02000000 6c410000 00000000"));
  assert.equal(decodeNsid(bare!), undefined, "no NETNSA_NSID: nothing made up");
});

test("an ack is errno 0; a refusal carries its errno; two messages in one datagram are both read", () => {
  const ack = hex("24000000 0200 0001 07000000 6c410000 00000000 24000000 5800 0500 07000000 00000000");
  const eexist = hex("24000000 0200 0000 08000000 6c410000 efffffff 24000000 5800 0500 08000000 00000000");
  const messages = decodeMessages(Buffer.concat([ack, eexist]));
  assert.deepEqual(
    messages.map((message) => [message.type, message.seq, decodeError(message)]),
    [
      [NLMSG_ERROR, 7, 0],
      [NLMSG_ERROR, 8, 17],
    ],
  );
});

test("a message whose length runs past the datagram is refused, not read past its end", () => {
  assert.throws(
    () => decodeMessages(hex("40000000 0200 0000 01000000 00000000 00000000")),
    (error: unknown) =>
      error instanceof InterceptError && error.code === "command-failed" && /malformed/.test(error.message),
  );
  assert.throws(() => decodeError({ type: NLMSG_ERROR, flags: 0, seq: 1, payload: Buffer.alloc(2) }), /truncated/);
});

test("a refusal is typed: EPERM is a privilege error, anything else a failed command with the errno's name", () => {
  const denied = failure("ip netns set x auto (rtnetlink RTM_NEWNSID)", 1);
  assert.equal(denied.code, "privilege");
  assert.match(denied.message, /EPERM.*CAP_NET_ADMIN/);
  const other = failure("rtnetlink RTM_GETNSID: no answer", 11);
  assert.ok(other instanceof CommandError);
  assert.equal(other.code, "command-failed");
  assert.match(other.message, /^rtnetlink RTM_GETNSID: no answer: EAGAIN$/);
});

test("the socket asks the kernel: a descriptor that is no namespace is refused with EINVAL", async () => {
  const socket = RouteSocket.open();
  const dir = await mkdtemp(path.join(tmpdir(), "intercept-netlink-"));
  try {
    // Reading an id needs no privilege: the kernel's refusal of a plain file comes back as -EINVAL.
    await writeFile(path.join(dir, "plain"), "");
    const fd = openSync(path.join(dir, "plain"), "r");
    try {
      assert.equal(socket.nsid(fd), -22);
      // Our own namespace, by /proc: it has no id in itself unless someone gave it one; either way an id or -1.
      const own = openSync("/proc/self/ns/net", "r");
      try {
        assert.ok(socket.nsid(own) >= NETNSA_NSID_NOT_ASSIGNED);
      } finally {
        closeSync(own);
      }
    } finally {
      closeSync(fd);
    }
  } finally {
    socket.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("numberNamespaces: no directory, or files that are no namespace, give no ids (and a closed socket refuses)", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "intercept-netns-"));
  try {
    assert.deepEqual(await numberNamespaces(["a"], path.join(dir, "never-made")), new Map());
    await writeFile(path.join(dir, "plain"), ""); // a runtime's file before its namespace is mounted on it
    if (process.getuid?.() === 0) {
      assert.deepEqual(await numberNamespaces(["plain", "gone"], dir), new Map());
    } else {
      // Giving an id needs CAP_NET_ADMIN: said as such, not as a namespace that is gone.
      await assert.rejects(numberNamespaces(["plain"], dir), (error: unknown) => {
        return error instanceof InterceptError && error.code === "privilege";
      });
      assert.deepEqual(await numberNamespaces([], dir), new Map(), "listing needs no privilege");
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const socket = RouteSocket.open();
  socket.close();
  assert.throws(() => socket.nsid(0), /socket is closed/);
});
