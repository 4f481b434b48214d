"""What a compiled TPU program's scheduled HLO says about its DCN transfers.

The TPU compiler's cost model prices a multi-slice program's chips' work (`optimal_seconds`) but
not its DCN wire. Its HLO text does say which bytes cross DCN (the `send`s of the multi-slice
collectives, with their payload shapes), and its ENTRY lists the ops in the order each chip runs
them. From those this module models how much of the wire time the chips' own work hides:

- `convolution_flops`: the multiply-adds a convolution does on real data (TPU HLO writes every
  matmul as a convolution), counted per spatial dimension over the window taps that land on an
  input element rather than on padding or on the holes of a dilated input;
- `entry_op_seconds`: each ENTRY op's time as a roofline, max(FLOPs / peak, bytes / HBM bandwidth),
  with fusions priced by the convolutions they call and a conditional by its dearest branch;
- `dcn_step_model`: that timeline scaled to the compiler's own step time; the sends go onto one
  wire in program order, each no earlier than the op that issues it, and each `recv-done` waits
  for its transfer. The modelled step is where the timeline then ends.

It is a model, not a measurement: op times are rooflines scaled as a whole, and the DCN bandwidth
per chip is an input.
"""

from __future__ import annotations

import dataclasses
import math
import re

# Bytes per element of the HLO types.
HLO_BYTES = {
  "pred": 1,
  "s8": 1,
  "u8": 1,
  "bf16": 2,
  "f16": 2,
  "s16": 2,
  "u16": 2,
  "f32": 4,
  "s32": 4,
  "u32": 4,
  "f64": 8,
  "s64": 8,
  "u64": 8,
}
# A multi-slice `send`: a tuple of the data, a u32 and a token.
_SEND = re.compile(r"= \((\w+)\[([\d,]*)\](?:\{[^}]*\})?, u32\[\][^,]*, token\[\]\) send\(")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
# `%name = TYPE op(operands), attributes`; TYPE is an array or a tuple of them.
_OP = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([a-z][a-z0-9\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(ENTRY )?%([\w.\-]+) .*\{\s*$")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_RENDEZVOUS = re.compile(r'_xla_host_transfer_rendezvous="([^"]*)"')
# Ops that take no time of their own on the chip's timeline: views, tuples, tokens, and the
# asynchronous copies and DCN transfers (the wire is modelled apart).
_NO_TIME = frozenset(
  "get-tuple-element bitcast tuple parameter constant after-all copy-start copy-done "
  "partition-id replica-id send send-done recv recv-done collective-permute-done".split()
)


def branches(line: str) -> list[str]:
  """The computations a conditional on `line` may run: its branch_computations, or its
  true/false computations."""
  found = re.findall(
    r"branch_computations=\{([^}]*)\}|(?:true|false)_computation=%?([\w.\-]+)", line
  )
  return [c.strip().lstrip("%") for g, one in found for c in (g or one).split(",") if c.strip()]


def _dims(text: str) -> list[int]:
  return [int(d) for d in text.split(",") if d]


def _payload(dtype: str, dims: str) -> int:
  return math.prod(_dims(dims)) * HLO_BYTES.get(dtype, 4)


def type_bytes(hlo_type: str) -> int:
  """Bytes of an HLO type: one array (`bf16[8,128]{1,0}`) or a tuple of them."""
  return sum(_payload(dtype, dims) for dtype, dims in _ARRAY.findall(hlo_type))


def dcn_bytes(hlo: str) -> int:
  """Bytes one chip sends over DCN in `hlo`: the payloads of its multi-slice `send`s, summed once
  per op as written."""
  return sum(_payload(dtype, dims) for dtype, dims in _SEND.findall(hlo))


def _entry(hlo: str) -> str:
  m = re.search(r"^ENTRY .*?^}", hlo, re.S | re.M)
  return m.group(0) if m else ""


def dcn_schedule(hlo: str) -> tuple[int, int, int]:
  """From the scheduled ENTRY computation of `hlo` (ops in the order the chip runs them): the DCN
  bytes sent before the last matmul/convolution fusion (kind=kOutput), the number of such
  fusions, and how many of them come after the first DCN send."""
  matmuls, sends = [], []
  for i, line in enumerate(_entry(hlo).splitlines()):
    if " fusion(" in line and "kind=kOutput" in line:
      matmuls.append(i)
    elif m := _SEND.search(line):
      sends.append((i, _payload(*m.groups())))
  if not sends:
    return 0, len(matmuls), 0
  last = matmuls[-1] if matmuls else -1
  before = sum(size for i, size in sends if i < last)
  return before, len(matmuls), sum(i > sends[0][0] for i in matmuls)


@dataclasses.dataclass
class Op:
  name: str
  kind: str  # the HLO opcode
  hlo_type: str
  operands: list[str]
  line: str


def parse(hlo: str) -> tuple[dict[str, list[Op]], str | None]:
  """Every computation of `hlo` as its ops in order, and the ENTRY computation's name."""
  computations: dict[str, list[Op]] = {}
  entry, ops = None, None
  for line in hlo.splitlines():
    if not line.startswith(" "):
      if m := _COMPUTATION.match(line):
        ops = computations.setdefault(m.group(2), [])
        entry = m.group(2) if m.group(1) else entry
      continue
    if ops is not None and (m := _OP.match(line)):
      name, hlo_type, kind, rest = m.groups()
      head = rest.split(")", 1)[0]  # the operands, up to the call's closing parenthesis
      ops.append(Op(name, kind, hlo_type, re.findall(r"%([\w.\-]+)", head), line))
  return computations, entry


def _taps_on_data(n_in: int, n_out: int, size: int, low: int, stride: int, rhs: int, lhs: int):
  """Pairs (output position, window tap) along one dimension whose tap lands on an input
  element: not on the padding, nor on the holes that lhs dilation puts between elements."""
  span = (n_in - 1) * lhs + 1
  count = 0
  for o in range(n_out):
    for t in range(size):
      p = o * stride + t * rhs - low
      count += 0 <= p < span and p % lhs == 0
  return count


def convolution_flops(op: Op, shapes: dict[str, list[int]]) -> int:
  """2 × the multiply-adds `op` (a convolution) does on real data."""
  out = _dims(_ARRAY.search(op.hlo_type).group(2))
  lhs, rhs = shapes[op.operands[0]], shapes[op.operands[1]]
  lhs_labels, rhs_labels, out_labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", op.line).groups()
  window: dict[str, list[str]] = {}
  if w := re.search(r"window=\{([^}]*)\}", op.line):
    for item in w.group(1).split():
      key, _, value = item.partition("=")
      window[key] = value.split("x")

  def at(key: str, d: int, default: int) -> int:
    return int(window[key][d].split("_")[0]) if key in window else default

  taps = 1
  for d in range(sum(c.isdigit() for c in lhs_labels)):
    taps *= _taps_on_data(
      lhs[lhs_labels.index(str(d))],
      out[out_labels.index(str(d))],
      at("size", d, 1),
      at("pad", d, 0),
      at("stride", d, 1),
      at("rhs_dilate", d, 1),
      at("lhs_dilate", d, 1),
    )
  batch, features = out[out_labels.index("b")], out[out_labels.index("f")]
  return 2 * batch * features * rhs[rhs_labels.index("i")] * taps


def dot_flops(op: Op, shapes: dict[str, list[int]]) -> int:
  """2 × the multiply-adds of a `dot`: the output's size × the contracted size."""
  out = _dims(_ARRAY.search(op.hlo_type).group(2))
  m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", op.line)
  lhs = shapes[op.operands[0]]
  return 2 * math.prod(out) * math.prod(lhs[i] for i in _dims(m.group(1) if m else ""))


class _Pricer:
  def __init__(self, hlo: str, peak_flops: float, hbm_bytes_per_s: float):
    self.computations, self.entry = parse(hlo)
    self.shapes, self.bytes = {}, {}
    for ops in self.computations.values():
      for op in ops:
        self.bytes[op.name] = type_bytes(op.hlo_type)
        if a := _ARRAY.match(op.hlo_type):
          self.shapes[op.name] = _dims(a.group(2))
    self.peak, self.bandwidth = peak_flops, hbm_bytes_per_s
    self._flops: dict[str, int] = {}

  def op_flops(self, op: Op) -> int:
    """FLOPs of one op: its own convolution or dot, and those of the computations it calls."""
    total = sum(self.flops(c) for c in re.findall(r"calls=%([\w.\-]+)", op.line))
    if op.kind == "convolution":
      total += convolution_flops(op, self.shapes)
    elif op.kind == "dot":
      total += dot_flops(op, self.shapes)
    return total

  def flops(self, computation: str) -> int:
    """FLOPs of a computation's convolutions and dots, and of the fusions it calls."""
    if computation not in self._flops:
      self._flops[computation] = sum(map(self.op_flops, self.computations.get(computation, [])))
    return self._flops[computation]

  def seconds(self, op: Op) -> float:
    if op.kind in _NO_TIME:
      return 0.0
    if op.kind == "conditional":
      costs = (sum(map(self.seconds, self.computations.get(c, []))) for c in branches(op.line))
      return max(costs, default=0.0)
    flops = self.op_flops(op)
    moved = self.bytes[op.name] + sum(self.bytes.get(a, 0) for a in op.operands)
    return max(flops / self.peak, moved / self.bandwidth)


def program_flops(hlo: str) -> int:
  """FLOPs of the ENTRY computation's convolutions and dots, fusions included, each called
  computation counted once per call; a while loop's body is not counted (TPU HLO does not give
  its trip count)."""
  pricer = _Pricer(hlo, 1.0, 1.0)
  return pricer.flops(pricer.entry) if pricer.entry else 0


def entry_op_seconds(hlo: str, peak_flops: float, hbm_bytes_per_s: float) -> list[tuple[Op, float]]:
  """The ENTRY ops in schedule order, each with its roofline time (module docstring)."""
  pricer = _Pricer(hlo, peak_flops, hbm_bytes_per_s)
  return [(op, pricer.seconds(op)) for op in pricer.computations.get(pricer.entry, [])]


@dataclasses.dataclass
class DcnModel:
  step_seconds: float  # the modelled step: the chips' work plus the wire time it does not hide
  exposed_seconds: float  # step_seconds − the compiler's step time
  wire_seconds: float  # all DCN bytes at the given bandwidth, back to back


def simulate(events, step_seconds: float, dcn_bytes_per_s: float) -> DcnModel:
  """The timeline of `events`, in program order: ("op", seconds), ("send", key, bytes) or
  ("recv-done", key). Op times are scaled to add up to `step_seconds`; the sends share one wire,
  each starting no earlier than its place in the program; a recv-done waits for its key's send."""
  work = sum(e[1] for e in events if e[0] == "op")
  scale = step_seconds / work if work else 0.0
  now = wire = 0.0
  arrives: dict[str, float] = {}
  sent = 0
  for event in events:
    if event[0] == "op":
      now += event[1] * scale
    elif event[0] == "send":
      wire = max(wire, now) + event[2] / dcn_bytes_per_s
      arrives[event[1]] = wire
      sent += event[2]
    elif event[0] == "recv-done":
      now = max(now, arrives.get(event[1], 0.0))
  if not work:
    now = max(now, step_seconds)
  return DcnModel(now, now - step_seconds, sent / dcn_bytes_per_s)


def dcn_events(
  hlo: str, peak_flops: float, hbm_bytes_per_s: float, weights: str = "roofline"
) -> list[tuple]:
  """`simulate`'s events for the ENTRY computation of `hlo`: each op's roofline time, each DCN
  send with its payload, and each recv-done with the transfer it completes. weights="cycles"
  times the ops by the compiler's own per-op `estimated_cycles` instead (a cross-check: they do
  not add up to its step time at any one clock, but `simulate` uses only their proportions)."""
  timed = entry_op_seconds(hlo, peak_flops, hbm_bytes_per_s)
  if any(op.kind == "while" for op, _ in timed):
    raise ValueError("the program runs a while loop, whose trip count its HLO does not give")
  if weights == "cycles":
    timed = [(op, int(m.group(1)) if (m := _CYCLES.search(op.line)) else 0) for op, _ in timed]
  elif weights != "roofline":
    raise ValueError(f"weights={weights!r}; choose 'roofline' or 'cycles'")
  recv_key = {
    op.name: m.group(1)
    for op, _ in timed
    if op.kind == "recv" and (m := _RENDEZVOUS.search(op.line))
  }
  events: list[tuple] = []
  for op, seconds in timed:
    if op.kind == "send" and (m := _SEND.search(op.line)) and (k := _RENDEZVOUS.search(op.line)):
      events.append(("send", k.group(1), _payload(*m.groups())))
    elif op.kind == "recv-done" and op.operands and op.operands[0] in recv_key:
      events.append(("recv-done", recv_key[op.operands[0]]))
    elif seconds:
      events.append(("op", seconds))
  return events


def dcn_step_model(
  hlo: str, step_seconds: float, dcn_gbps: float, peak_flops: float, hbm_bytes_per_s: float
) -> DcnModel | None:
  """The modelled step of a multi-slice program whose chips' work takes `step_seconds` (the
  compiler's estimate), with `dcn_gbps` Gbit/s of DCN per chip (module docstring); None for a
  program with a while loop in its ENTRY (a loop's time cannot be told from one pass of it)."""
  try:
    events = dcn_events(hlo, peak_flops, hbm_bytes_per_s)
  except ValueError:
    return None
  return simulate(events, step_seconds, dcn_gbps * 1e9 / 8)
