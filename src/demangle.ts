// Rust symbol names made readable: both of rustc's mangling schemes, printed
// as rustc-demangle's alternate form ("{:#}") prints them -- no crate hashes,
// no legacy `::h<hash>` suffix. A pure function of a string: a name that is
// not a Rust symbol, or is malformed, comes back unchanged; it never throws.
//
// Three forms reach it (see native/linux/stack_symbols_linux.cc):
//  - legacy, raw:       _ZN3std2rt10lang_start17h0123456789abcdefE
//  - legacy, already put through the C++ demangler by the addon, which joins
//    the elements with `::` but knows nothing of Rust's `$LT$`-style escapes:
//                       std::rt::lang_start::h0123456789abcdef
//  - v0 (RFC 2603):     _RNvCs1234_7mycrate3foo (the C++ demangler leaves these alone)
//
// A legacy name is only taken for Rust when it ends in the hash element
// (`h` + 16 hex digits): `_ZN3foo3barE` is also a valid C++ name.

const LEGACY_HASH = /^h[0-9a-f]{16}$/;
// The suffix LLVM adds to a local symbol it renamed (`.llvm.1234...`).
const LLVM_SUFFIX = /\.llvm\.[0-9A-F@]+$/;
// Bounds for v0 backreferences, which may refer to each other: nesting depth,
// parse steps and output length (a chain of backrefs can double the output at
// each step, so a short symbol could otherwise expand without limit).
const MAX_DEPTH = 200;
const MAX_STEPS = 100_000;
const MAX_OUTPUT = 256 * 1024;

// Stacks repeat the same names: demangled names are kept, up to a bound.
const MAX_CACHED = 4096;
const cache = new Map<string, string>();

/** `symbol` demangled if it is a Rust symbol (legacy or v0), else `symbol` itself. */
export function demangleRust(symbol: string): string {
  let readable = cache.get(symbol);
  if (readable === undefined) {
    readable = demangleUncached(symbol);
    if (cache.size >= MAX_CACHED) cache.clear();
    cache.set(symbol, readable);
  }
  return readable;
}

function demangleUncached(symbol: string): string {
  try {
    if (symbol.startsWith('_R')) return demangleV0(symbol) ?? symbol;
    if (symbol.startsWith('_ZN') || symbol.startsWith('__ZN')) return demangleLegacy(symbol) ?? symbol;
    if (symbol.includes('::h')) return demangleCxaLegacy(symbol) ?? symbol;
  } catch {
    // A malformed name, or one past the bounds above: shown as it came.
  }
  return symbol;
}

// ------------------------------------------------------------------- legacy

const LEGACY_ESCAPES: Readonly<Record<string, string>> = {
  SP: '@',
  BP: '*',
  RF: '&',
  LT: '<',
  GT: '>',
  LP: '(',
  RP: ')',
  C: ',',
};

/** One legacy path element with its `$..$` escapes and `..` resolved; undefined if malformed. */
function unescapeLegacy(element: string): string | undefined {
  let text = element.startsWith('_$') ? element.slice(1) : element;
  let out = '';
  while (text.length > 0) {
    if (text.startsWith('$')) {
      const end = text.indexOf('$', 1);
      if (end < 0) return undefined;
      const code = text.slice(1, end);
      const plain = LEGACY_ESCAPES[code];
      if (plain !== undefined) {
        out += plain;
      } else if (/^u[0-9a-f]{1,6}$/.test(code)) {
        const point = parseInt(code.slice(1), 16);
        if (point > 0x10ffff || (point >= 0xd800 && point <= 0xdfff)) return undefined;
        out += String.fromCodePoint(point);
      } else {
        return undefined;
      }
      text = text.slice(end + 1);
    } else if (text.startsWith('..')) {
      out += '::';
      text = text.slice(2);
    } else {
      const next = text.search(/[$]|\.\./);
      const cut = next < 0 ? text.length : next;
      out += text.slice(0, cut);
      text = text.slice(cut);
    }
  }
  return out;
}

function joinLegacy(elements: readonly string[]): string | undefined {
  if (elements.length < 2 || !LEGACY_HASH.test(elements[elements.length - 1]!)) return undefined;
  const parts: string[] = [];
  for (const element of elements.slice(0, -1)) {
    const part = unescapeLegacy(element);
    if (part === undefined) return undefined;
    parts.push(part);
  }
  return parts.join('::');
}

function demangleLegacy(symbol: string): string | undefined {
  const text = symbol.replace(LLVM_SUFFIX, '');
  let pos = symbol.startsWith('__ZN') ? 4 : 3;
  const elements: string[] = [];
  while (pos < text.length && text[pos] !== 'E') {
    const digits = /^[1-9][0-9]*/.exec(text.slice(pos, pos + 10));
    if (!digits) return undefined;
    const length = Number(digits[0]);
    pos += digits[0].length;
    if (pos + length > text.length) return undefined;
    elements.push(text.slice(pos, pos + length));
    pos += length;
  }
  // The name ends at `E`; anything after it must be a `.suffix` (kept as is).
  if (text[pos] !== 'E') return undefined;
  const rest = text.slice(pos + 1);
  if (rest !== '' && !rest.startsWith('.')) return undefined;
  const path = joinLegacy(elements);
  return path === undefined ? undefined : path + rest;
}

/**
 * `a::b$LT$T$GT$::c::h0123456789abcdef`, as the C++ demangler leaves a legacy
 * Rust name, or `a::b<T>::c::h0123456789abcdef`, as a Rust-aware one (binutils)
 * prints it: the hash goes, and escapes left in are resolved.
 */
function demangleCxaLegacy(symbol: string): string | undefined {
  const elements = symbol.split('::');
  if (elements.every((e) => /^[A-Za-z0-9_$.]+$/.test(e))) return joinLegacy(elements);
  if (elements.length < 2 || !LEGACY_HASH.test(elements[elements.length - 1]!)) return undefined;
  return elements.slice(0, -1).join('::');
}

// ----------------------------------------------------------------------- v0

class Malformed extends Error {}

const BASIC_TYPES: Readonly<Record<string, string>> = {
  a: 'i8',
  b: 'bool',
  c: 'char',
  d: 'f64',
  e: 'str',
  f: 'f32',
  h: 'u8',
  i: 'isize',
  j: 'usize',
  l: 'i32',
  m: 'u32',
  n: 'i128',
  o: 'u128',
  p: '_',
  s: 'i16',
  t: 'u16',
  u: '()',
  v: '...',
  x: 'i64',
  y: 'u64',
  z: '!',
};

// Sticky: they match at `lastIndex` only, without slicing the symbol.
const DECIMAL = /0|[1-9][0-9]{0,8}/y;
const HEX_DIGITS = /[0-9a-f]*_/y;

const SIGNED_INTEGERS = new Set(['a', 's', 'l', 'x', 'n', 'i']);
const UNSIGNED_INTEGERS = new Set(['h', 't', 'm', 'y', 'o', 'j']);

function demangleV0(symbol: string): string | undefined {
  const text = symbol.replace(LLVM_SUFFIX, '');
  // Positions in backreferences count from the character after `_R`.
  const parser = new V0Parser(text.slice(2));
  // An optional encoding version: only version 0 (no number) exists.
  if (/^[0-9]/.test(parser.rest())) return undefined;
  let out = parser.path(true);
  // The instantiating crate (a path) may follow; the alternate form omits it.
  if (parser.pos < parser.text.length && /^[A-Z]/.test(parser.rest())) parser.path(false);
  const suffix = parser.rest();
  if (suffix !== '') {
    if (!suffix.startsWith('.') && !suffix.startsWith('$')) return undefined;
    out += suffix;
  }
  return out;
}

class V0Parser {
  pos = 0;
  #depth = 0;
  #steps = 0;
  // Lifetimes bound by the `for<...>` binders being printed, outermost first.
  #boundLifetimes = 0;

  constructor(readonly text: string) {}

  rest(): string {
    return this.text.slice(this.pos);
  }

  #peek(): string {
    return this.text[this.pos] ?? '';
  }

  #eat(c: string): boolean {
    if (this.text[this.pos] !== c) return false;
    this.pos++;
    return true;
  }

  #next(): string {
    const c = this.text[this.pos];
    if (c === undefined) throw new Malformed('unexpected end');
    this.pos++;
    return c;
  }

  #emit(text: string): string {
    if (text.length > MAX_OUTPUT) throw new Malformed('output too long');
    return text;
  }

  /** Runs `parse` one level deeper, bounded. */
  #nested<T>(parse: () => T): T {
    if (++this.#depth > MAX_DEPTH || ++this.#steps > MAX_STEPS) throw new Malformed('too deep or too long');
    try {
      return parse();
    } finally {
      this.#depth--;
    }
  }

  /** `<base-62-number>`: `_` is 0, `<digits>_` is digits + 1. */
  #base62(): number {
    if (this.#eat('_')) return 0;
    let value = 0;
    let digits = 0;
    for (;;) {
      const c = this.#next();
      if (c === '_') break;
      const code = c.charCodeAt(0);
      const digit =
        code >= 48 && code <= 57 ? code - 48 : code >= 97 && code <= 122 ? code - 97 + 10 : code >= 65 && code <= 90 ? code - 65 + 36 : -1;
      if (digit < 0) throw new Malformed('bad base-62 digit');
      // Crate disambiguators are 64-bit hashes, never printed: a float is
      // exact for every number that is (backrefs, closure indices, lifetimes).
      if (++digits > 11) throw new Malformed('number too large');
      value = value * 62 + digit;
    }
    return value + 1;
  }

  /** `[s <base-62-number>]`: 0 when absent. */
  #disambiguator(): number {
    return this.#eat('s') ? this.#base62() + 1 : 0;
  }

  #decimal(): number {
    DECIMAL.lastIndex = this.pos;
    const digits = DECIMAL.exec(this.text);
    if (!digits) throw new Malformed('expected a decimal number');
    this.pos += digits[0].length;
    return Number(digits[0]);
  }

  /** `<undisambiguated-identifier>`. */
  #identifier(): string {
    const punycode = this.#eat('u');
    const length = this.#decimal();
    this.#eat('_'); // separates the length from an identifier that starts with a digit or `_`
    if (this.pos + length > this.text.length) throw new Malformed('identifier past the end');
    const raw = this.text.slice(this.pos, this.pos + length);
    this.pos += length;
    return punycode ? decodePunycode(raw) : raw;
  }

  /** Parses what a backreference points at, then comes back. */
  #backref<T>(parse: () => T): T {
    const start = this.pos - 1; // at the `B`
    const target = this.#base62();
    if (target >= start) throw new Malformed('backref does not point back');
    const resume = this.pos;
    this.pos = target;
    try {
      return this.#nested(parse);
    } finally {
      this.pos = resume;
    }
  }

  /** `<path>`; `inValue`: generic arguments print as `::<..>` (an expression path). */
  path(inValue: boolean): string {
    return this.#nested(() => this.#path(inValue));
  }

  #path(inValue: boolean): string {
    const tag = this.#next();
    switch (tag) {
      case 'C': {
        this.#disambiguator(); // the crate's hash: not shown in the alternate form
        return this.#emit(this.#identifier());
      }
      case 'M': {
        this.#disambiguator();
        this.path(false); // the impl's own path: not shown
        return this.#emit(`<${this.type()}>`);
      }
      case 'X': {
        this.#disambiguator();
        this.path(false);
        const self = this.type();
        return this.#emit(`<${self} as ${this.path(false)}>`);
      }
      case 'Y': {
        const self = this.type();
        return this.#emit(`<${self} as ${this.path(false)}>`);
      }
      case 'N': {
        const namespace = this.#next();
        if (!/[A-Za-z]/.test(namespace)) throw new Malformed('bad namespace');
        const parent = this.path(inValue);
        const dis = this.#disambiguator();
        const name = this.#identifier();
        if (/[a-z]/.test(namespace)) return this.#emit(name === '' ? parent : `${parent}::${name}`);
        const kind = namespace === 'C' ? 'closure' : namespace === 'S' ? 'shim' : namespace;
        return this.#emit(`${parent}::{${kind}${name === '' ? '' : `:${name}`}#${dis}}`);
      }
      case 'I': {
        const base = this.path(inValue);
        const args: string[] = [];
        while (!this.#eat('E')) args.push(this.#genericArg());
        return this.#emit(`${base}${inValue ? '::' : ''}<${args.join(', ')}>`);
      }
      case 'B':
        return this.#backref(() => this.#path(inValue));
      default:
        throw new Malformed('bad path');
    }
  }

  #genericArg(): string {
    if (this.#eat('L')) return this.#lifetime(this.#base62());
    if (this.#eat('K')) return this.#const();
    return this.type();
  }

  #lifetime(index: number): string {
    if (index === 0) return "'_";
    const depth = this.#boundLifetimes - index;
    if (depth < 0) throw new Malformed('unbound lifetime');
    return depth < 26 ? `'${String.fromCharCode(97 + depth)}` : `'_${depth}`;
  }

  /** `[G <base-62-number>]`: runs `body` with that many more bound lifetimes, printed as `for<...> `. */
  #binder(body: () => string): string {
    const count = this.#eat('G') ? this.#base62() + 1 : 0;
    if (count === 0) return body();
    const names: string[] = [];
    for (let i = 0; i < count; i++) {
      this.#boundLifetimes++;
      names.push(this.#lifetime(1));
    }
    try {
      return `for<${names.join(', ')}> ${body()}`;
    } finally {
      this.#boundLifetimes -= count;
    }
  }

  type(): string {
    return this.#nested(() => this.#emit(this.#type()));
  }

  #type(): string {
    const c = this.#peek();
    const basic = BASIC_TYPES[c];
    if (basic !== undefined) {
      this.pos++;
      return basic;
    }
    this.pos++;
    switch (c) {
      case 'R':
      case 'Q': {
        const lifetime = this.#eat('L') ? this.#base62() : 0;
        const shown = lifetime === 0 ? '' : `${this.#lifetime(lifetime)} `;
        return `&${shown}${c === 'Q' ? 'mut ' : ''}${this.type()}`;
      }
      case 'P':
        return `*const ${this.type()}`;
      case 'O':
        return `*mut ${this.type()}`;
      case 'A': {
        const element = this.type();
        return `[${element}; ${this.#const()}]`;
      }
      case 'S':
        return `[${this.type()}]`;
      case 'T': {
        const items: string[] = [];
        while (!this.#eat('E')) items.push(this.type());
        return items.length === 1 ? `(${items[0]},)` : `(${items.join(', ')})`;
      }
      case 'F':
        return this.#binder(() => this.#fnSig());
      case 'D': {
        const bounds = this.#binder(() => this.#dynBounds());
        const lifetime = this.#base62Lifetime();
        return lifetime === "'_" ? `dyn ${bounds}` : `dyn ${bounds} + ${lifetime}`;
      }
      case 'B':
        return this.#backref(() => this.#type());
      default:
        this.pos--;
        return this.path(false);
    }
  }

  #base62Lifetime(): string {
    if (!this.#eat('L')) throw new Malformed('expected a lifetime');
    return this.#lifetime(this.#base62());
  }

  #fnSig(): string {
    const unsafe = this.#eat('U') ? 'unsafe ' : '';
    let abi = '';
    if (this.#eat('K')) abi = `extern "${this.#eat('C') ? 'C' : this.#identifier().replaceAll('_', '-')}" `;
    const params: string[] = [];
    while (!this.#eat('E')) params.push(this.type());
    const ret = this.type();
    return `${unsafe}${abi}fn(${params.join(', ')})${ret === '()' ? '' : ` -> ${ret}`}`;
  }

  #dynBounds(): string {
    const traits: string[] = [];
    while (!this.#eat('E')) {
      let trait = this.path(false);
      const bindings: string[] = [];
      while (this.#eat('p')) {
        const name = this.#identifier();
        bindings.push(`${name} = ${this.type()}`);
      }
      if (bindings.length > 0) {
        trait = trait.endsWith('>') ? `${trait.slice(0, -1)}, ${bindings.join(', ')}>` : `${trait}<${bindings.join(', ')}>`;
      }
      traits.push(trait);
    }
    return traits.join(' + ');
  }

  /** `<const>`: a value of an integer, bool or char type, a placeholder, or a backreference. */
  #const(): string {
    if (this.#eat('B')) return this.#backref(() => this.#const());
    const type = this.#next();
    if (type === 'p') return '_';
    const negative = this.#eat('n');
    HEX_DIGITS.lastIndex = this.pos;
    const hex = HEX_DIGITS.exec(this.text);
    if (!hex) throw new Malformed('bad constant');
    this.pos += hex[0].length;
    const value = hex[0].length > 1 ? BigInt(`0x${hex[0].slice(0, -1)}`) : 0n;
    if (SIGNED_INTEGERS.has(type) || (UNSIGNED_INTEGERS.has(type) && !negative)) {
      // Decimal while it fits in 64 bits, hexadecimal beyond (as rustc-demangle prints them).
      const digits = value > 0xffff_ffff_ffff_ffffn ? `0x${value.toString(16)}` : `${value}`;
      return `${negative ? '-' : ''}${digits}`;
    }
    if (type === 'b' && !negative && value <= 1n) return value === 1n ? 'true' : 'false';
    if (type === 'c' && !negative && value <= 0x10ffffn && (value < 0xd800n || value > 0xdfffn)) {
      return JSON.stringify(String.fromCodePoint(Number(value))).replace(/^"|"$/g, "'");
    }
    throw new Malformed('unsupported constant');
  }
}

/** RFC 3492 Punycode, as v0 uses it for non-ASCII identifiers (`_` instead of `-` as the delimiter). */
function decodePunycode(encoded: string): string {
  const cut = encoded.lastIndexOf('_');
  const output = cut < 0 ? [] : [...encoded.slice(0, cut)].map((c) => c.codePointAt(0)!);
  let input = cut < 0 ? 0 : cut + 1;
  let n = 128;
  let i = 0;
  let bias = 72;
  let first = true;
  while (input < encoded.length) {
    const oldI = i;
    let w = 1;
    for (let k = 36; ; k += 36) {
      const c = encoded[input++];
      if (c === undefined) throw new Malformed('bad punycode');
      const digit = /[a-z]/.test(c) ? c.charCodeAt(0) - 97 : /[0-9]/.test(c) ? c.charCodeAt(0) - 22 : -1;
      if (digit < 0) throw new Malformed('bad punycode digit');
      i += digit * w;
      const t = k <= bias ? 1 : k >= bias + 26 ? 26 : k - bias;
      if (digit < t) break;
      w *= 36 - t;
      if (i > 0x10ffff * (output.length + 1) || w > 0x10ffff * 36) throw new Malformed('punycode overflow');
    }
    const length = output.length + 1;
    let delta = first ? Math.floor((i - oldI) / 700) : Math.floor((i - oldI) / 2);
    first = false;
    delta += Math.floor(delta / length);
    let k = 0;
    while (delta > 455) {
      delta = Math.floor(delta / 35);
      k += 36;
    }
    bias = k + Math.floor((36 * delta) / (delta + 38));
    n += Math.floor(i / length);
    i %= length;
    if (n > 0x10ffff || (n >= 0xd800 && n <= 0xdfff)) throw new Malformed('bad code point');
    output.splice(i, 0, n);
    i++;
  }
  return String.fromCodePoint(...output);
}

/** `frames` with every Rust symbol demangled (the same array when none is). */
export function demangleFrames<F extends { symbol?: string }>(frames: F[]): F[] {
  let out: F[] | undefined;
  for (let i = 0; i < frames.length; i++) {
    const symbol = frames[i]!.symbol;
    if (symbol === undefined) continue;
    const readable = demangleRust(symbol);
    if (readable === symbol) continue;
    out ??= frames.slice();
    out[i] = { ...frames[i]!, symbol: readable };
  }
  return out ?? frames;
}
