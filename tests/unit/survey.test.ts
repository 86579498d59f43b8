/**
 * The links survey (src/kernel/survey.ts) read from rtnetlink dump
 * messages: a link's index, name, type and loopback flag, a qdisc's link
 * and kind, and what is skipped. The messages are laid out here as the
 * kernel sends them (struct ifinfomsg / struct tcmsg, then attributes);
 * tests/e2e/watcher.test.ts compares the survey with `ip -j link` on a
 * real namespace.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { IFLA_IFNAME, type NetlinkMessage, RTM_GETLINK, RTM_NEWLINK } from "../../src/kernel/netlink.js";
import { decodeLink, encodeDumpRequest } from "../../src/kernel/survey.js";
import { decodeQdisc, RTM_NEWQDISC, TCA_KIND } from "../../src/kernel/tc.js";

/** An attribute as the kernel lays it out: rta_len, rta_type, the value, padding to 4 bytes. */
function attribute(type: number, value: Buffer): Buffer {
  const padded = Buffer.alloc(Math.ceil((4 + value.length) / 4) * 4);
  padded.writeUInt16LE(4 + value.length, 0);
  padded.writeUInt16LE(type, 2);
  value.copy(padded, 4);
  return padded;
}

const text = (value: string) => Buffer.from(`${value}\0`);

function link(ifindex: number, arphrd: number, flags: number, ...attributes: Buffer[]): NetlinkMessage {
  const header = Buffer.alloc(16);
  header.writeUInt16LE(arphrd, 2);
  header.writeInt32LE(ifindex, 4);
  header.writeUInt32LE(flags, 8);
  return { type: RTM_NEWLINK, flags: 2, seq: 7, payload: Buffer.concat([header, ...attributes]) };
}

function qdisc(ifindex: number, ...attributes: Buffer[]): NetlinkMessage {
  const header = Buffer.alloc(20);
  header.writeInt32LE(ifindex, 4);
  return { type: RTM_NEWQDISC, flags: 2, seq: 7, payload: Buffer.concat([header, ...attributes]) };
}

const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;
const IFLA_MTU = 4;
const mtu = attribute(IFLA_MTU, Buffer.from([0xdc, 0x05, 0, 0]));

test("a dump request: the header, NLM_F_REQUEST | NLM_F_DUMP, and a zeroed family header", () => {
  assert.equal(
    encodeDumpRequest(RTM_GETLINK, 9, 16).toString("hex"),
    // nlmsg_len 32, RTM_GETLINK (18), flags 0x301, seq 9, pid 0; struct ifinfomsg all zeros
    `20000000120001030900000000000000${"00".repeat(16)}`,
  );
});

test("links: index, name among other attributes, ip's name of the type, loopback by type or flag", () => {
  const cases: [NetlinkMessage, unknown][] = [
    [link(1, 772, IFF_UP | IFF_LOOPBACK, mtu, attribute(IFLA_IFNAME, text("lo"))), [1, "lo", "loopback", true]],
    [link(4, 1, IFF_UP, attribute(IFLA_IFNAME, text("eth0")), mtu), [4, "eth0", "ether", false]],
    [link(5, 65534, 0, attribute(IFLA_IFNAME, text("wg0"))), [5, "wg0", "none", false]],
    [link(6, 1, IFF_LOOPBACK, attribute(IFLA_IFNAME, text("odd"))), [6, "odd", "ether", true]],
    [link(7, 9999, 0, attribute(IFLA_IFNAME, text("x"))), [7, "x", "[9999]", false]],
  ];
  for (const [message, expected] of cases) {
    const [decoded] = decodeLink(message);
    assert.deepEqual([decoded?.ifindex, decoded?.name, decoded?.linkType, decoded?.loopback], expected);
  }
});

test("links skipped: another message type, no name, a truncated header or attribute", () => {
  const named = attribute(IFLA_IFNAME, text("eth0"));
  assert.deepEqual(decodeLink({ ...link(2, 1, 0, named), type: 3 }), []);
  assert.deepEqual(decodeLink(link(2, 1, 0, mtu)), []);
  assert.deepEqual(decodeLink({ ...link(2, 1, 0), payload: Buffer.alloc(8) }), []);
  const cut = link(2, 1, 0, named);
  assert.deepEqual(decodeLink({ ...cut, payload: cut.payload.subarray(0, cut.payload.length - 4) }), []);
});

test("qdiscs: the link's index and the kind; one without a kind or of another type is skipped", () => {
  assert.deepEqual(decodeQdisc(qdisc(3, attribute(TCA_KIND, text("clsact")))), [{ ifindex: 3, kind: "clsact" }]);
  assert.deepEqual(decodeQdisc(qdisc(3)), []);
  assert.deepEqual(decodeQdisc({ ...qdisc(3, attribute(TCA_KIND, text("clsact"))), type: RTM_NEWLINK }), []);
});
