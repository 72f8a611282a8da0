// Bounds-checked reads from a file's bytes, for the format parsers beside this file.
// Every offset comes from the file itself, so every read is checked: a truncated or
// corrupt file gives a BinaryFormatError naming the file and the offset, never a
// RangeError from Buffer.

export class BinaryFormatError extends Error {
  name = 'BinaryFormatError';
}

export class Reader {
  /**
   * @param {Buffer} buffer the whole file
   * @param {string} path the file's name, for messages
   * @param {boolean} little little-endian fields
   */
  constructor(buffer, path, little = true) {
    this.buffer = buffer;
    this.path = path;
    this.little = little;
    this.size = buffer.length;
  }

  fail(message) {
    throw new BinaryFormatError(`${this.path}: ${message}`);
  }

  /** Throws unless `length` bytes at `offset` are inside the file. */
  need(offset, length, what) {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      const at = offset > 0xffffffff ? `0x${offset.toString(16)}` : offset;
      this.fail(`truncated at offset ${at} (${what}: ${length} bytes, the file has ${this.size})`);
    }
  }

  u8(offset, what = 'a byte') {
    this.need(offset, 1, what);
    return this.buffer[offset];
  }

  u16(offset, what = 'a 16-bit field') {
    this.need(offset, 2, what);
    return this.little ? this.buffer.readUInt16LE(offset) : this.buffer.readUInt16BE(offset);
  }

  u32(offset, what = 'a 32-bit field') {
    this.need(offset, 4, what);
    return this.little ? this.buffer.readUInt32LE(offset) : this.buffer.readUInt32BE(offset);
  }

  /** A 64-bit field as a Number; values past 2^53 come back unsafe and fail any later `need`. */
  u64(offset, what = 'a 64-bit field') {
    this.need(offset, 8, what);
    return Number(this.little ? this.buffer.readBigUInt64LE(offset) : this.buffer.readBigUInt64BE(offset));
  }

  /** A word of the file's class: 4 or 8 bytes. */
  word(offset, bits, what) {
    return bits === 64 ? this.u64(offset, what) : this.u32(offset, what);
  }

  /** A NUL-terminated string starting at `offset` and ending before `end` (default: the file's end). */
  cstr(offset, what = 'a string', end = this.size) {
    this.need(offset, 1, what);
    const limit = Math.min(end, this.size);
    const nul = this.buffer.indexOf(0, offset);
    if (nul < 0 || nul >= limit) this.fail(`truncated at offset ${offset} (${what}: no terminating NUL before offset ${limit})`);
    return this.buffer.toString('latin1', offset, nul);
  }

  /** A fixed-size field holding a string padded with NULs (Mach-O segment names, PE section names). */
  fixed(offset, length, what) {
    this.need(offset, length, what);
    const bytes = this.buffer.subarray(offset, offset + length);
    const nul = bytes.indexOf(0);
    return bytes.toString('latin1', 0, nul < 0 ? length : nul);
  }

  /** Throws unless a table of `count` entries of `entrySize` bytes at `offset` fits in the file. */
  table(offset, count, entrySize, what) {
    this.need(offset, count * entrySize, `${what} (${count} × ${entrySize} bytes)`);
  }
}
