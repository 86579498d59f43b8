/**
 * The flow records' frame protocol, spoken by the flow reader
 * (templates/observe/flow_reader.c) and by the agent's relay (./relay.ts).
 * Each frame is a header, its kind and its size as two 16-bit numbers in
 * the host's byte order, then that many bytes: a record as the ring
 * buffer held it, or a control word ("ready", and the relay's "overrun").
 *
 * It is read a chunk at a time: the reader writes a whole batch of
 * records at once (all it found in the ring buffer after a rest), and
 * each chunk becomes one array of records, views of the chunk's bytes.
 * Records in hex, a line each, cost a watch more than decoding them
 * (docs/benchmarks.md, flow records): twice the bytes through the pipe, a
 * string and a buffer a line.
 */
import { endianness } from "node:os";
import { Transform, type TransformCallback } from "node:stream";

/** The reader holds the ring buffer (the relay: the watcher is counted in): records sent from now on are seen. */
export const READY = "ready";
/** The relay dropped this watcher: it fell too far behind. */
export const OVERRUN = "overrun";

export type ControlWord = typeof READY | typeof OVERRUN;

/** enum frame_kind of flow_reader.c (a unit test holds the two equal). */
export const FRAME_KINDS = { FRAME_RECORD: 1, FRAME_CONTROL: 2 } as const;
const { FRAME_RECORD, FRAME_CONTROL } = FRAME_KINDS;
/** struct frame_header: kind, then size. */
const HEADER_BYTES = 4;
/** The largest frame's bytes: its size is 16 bits. */
const MAX_FRAME_BYTES = 0xffff;

const LITTLE = endianness() === "LE";

function readHalf(bytes: Buffer, at: number): number {
  return LITTLE ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at);
}

function frameHeader(kind: number, size: number): Buffer {
  if (size > MAX_FRAME_BYTES) throw new RangeError(`a frame of ${size} bytes: at most ${MAX_FRAME_BYTES}`);
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  if (LITTLE) {
    header.writeUInt16LE(kind, 0);
    header.writeUInt16LE(size, 2);
  } else {
    header.writeUInt16BE(kind, 0);
    header.writeUInt16BE(size, 2);
  }
  return header;
}

/**
 * Bytes of the protocol in, arrays of records out (object mode); a control
 * word is emitted as a "control" event when its frame is read, before the
 * records that follow it. A frame of another kind is an error (a reader of
 * another protocol).
 */
export class RecordBatches extends Transform {
  /** The start of a frame whose end has not come yet. */
  private partial: Buffer = Buffer.alloc(0);

  constructor() {
    super({ readableObjectMode: true });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const bytes = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    const records: Buffer[] = [];
    let at = 0;
    while (bytes.length - at >= HEADER_BYTES) {
      const kind = readHalf(bytes, at);
      if (kind !== FRAME_RECORD && kind !== FRAME_CONTROL) {
        done(new Error(`a flow records frame of kind ${kind}: the reader speaks another protocol`));
        return;
      }
      const end = at + HEADER_BYTES + readHalf(bytes, at + 2);
      if (end > bytes.length) break;
      const body = bytes.subarray(at + HEADER_BYTES, end);
      at = end;
      if (kind === FRAME_RECORD) {
        records.push(body);
        continue;
      }
      if (records.length > 0) this.push(records.splice(0));
      this.emit("control", body.toString("latin1"));
    }
    this.partial = Buffer.from(bytes.subarray(at)); // a copy: the chunk's memory is the stream's
    if (records.length > 0) this.push(records);
    done();
  }

  override _flush(done: TransformCallback): void {
    // Only a writer that died while writing leaves part of a frame: no record to make of it, and
    // its end is said by whoever watches the writer (the reader's exit status, the relay's close).
    this.partial = Buffer.alloc(0);
    done();
  }
}

/** @records as the protocol's frames, in one buffer. */
export function recordFrames(records: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const record of records) parts.push(frameHeader(FRAME_RECORD, record.length), record);
  return Buffer.concat(parts);
}

/** @word as the protocol's frame. */
export function controlFrame(word: ControlWord): Buffer {
  const body = Buffer.from(word, "latin1");
  return Buffer.concat([frameHeader(FRAME_CONTROL, body.length), body]);
}
