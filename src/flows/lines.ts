/**
 * The flow records' line protocol, spoken by the flow reader
 * (templates/observe/flow_reader.c) and by the agent's relay (./relay.ts):
 * a control word on a line of its own ("ready", and the relay's
 * "overrun"), else one record a line in lowercase hex.
 *
 * It is read a chunk at a time: the reader writes a whole batch of
 * records at once (all it found in the ring buffer after a rest), and
 * each chunk becomes one array of records. A record a line through
 * readline and async iteration cost the watch more CPU than a busy
 * machine spares (docs/benchmarks.md, flow records).
 */
import { Transform, type TransformCallback } from "node:stream";

/** The reader holds the ring buffer (the relay: the watcher is counted in): records sent from now on are seen. */
export const READY = "ready";
/** The relay dropped this watcher: it fell too far behind. */
export const OVERRUN = "overrun";

export type ControlWord = typeof READY | typeof OVERRUN;

const NEWLINE = 10;

/**
 * Bytes of the protocol in, arrays of records out (object mode); a control
 * word is emitted as a "control" event when its line is read, before the
 * records that follow it.
 */
export class RecordBatches extends Transform {
  /** The start of a line whose end has not come yet. */
  private partial: Buffer = Buffer.alloc(0);

  constructor() {
    super({ readableObjectMode: true });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const bytes = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    const end = bytes.lastIndexOf(NEWLINE);
    this.partial = Buffer.from(bytes.subarray(end + 1)); // a copy: the chunk's memory is the stream's
    if (end >= 0) this.emitLines(bytes.toString("latin1", 0, end));
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.partial.length > 0) this.emitLines(this.partial.toString("latin1"));
    done();
  }

  private emitLines(text: string): void {
    const records: Buffer[] = [];
    for (const line of text.split("\n")) {
      if (line === READY || line === OVERRUN) {
        if (records.length > 0) this.push(records.splice(0));
        this.emit("control", line);
      } else if (line.length > 0) records.push(Buffer.from(line, "hex"));
    }
    if (records.length > 0) this.push(records);
  }
}

/** @records as the protocol's lines. */
export function recordLines(records: readonly Buffer[]): string {
  let text = "";
  for (const record of records) text += `${record.toString("hex")}\n`;
  return text;
}
