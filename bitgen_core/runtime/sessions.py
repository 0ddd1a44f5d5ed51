"""onnxruntime sessions for an exported model: options, ternary weights handed in at load, and
a per-machine cache of the graphs in their optimised form, and the trim of load-only pages.

Why the cache: onnxruntime's full optimisation of the vision graph (NCHWc layouts, conv
fusions) makes it ~2.5x faster on this CPU (13 vs 34 ms), but the optimiser holds the
original and the transformed weights at once: the session costs +47 MB RSS. Loading the
*already optimised* graph with optimisations off costs +23 MB and runs as fast (measured on
models/default: 13.4 ms either way). The optimised form depends on the CPU (NCHWc block size
follows its vector width) and the onnxruntime version, so it cannot ship in the model
directory; the first load on a machine writes it to $BITGEN_CACHE/graphs (default
~/.cache/bitgen/graphs), keyed by the graph's and its packed weights' sha256 (from the checked
manifest), the onnxruntime version and the CPU's features; later loads use it. A cached file
is only used when its own sha256 sidecar matches. BITGEN_GRAPH_CACHE=0 turns the cache off.

The exact (int8) graphs are cached the same way, in the form their own optimisation level
(basic; the text encoder all) gives, ternary weights included: loaded with the optimiser off
they compute bit for bit what the model directory's graphs do (tests/runtime/test_sessions.py),
but their sessions are smaller, the folded constants and shape arithmetic (~1,000 nodes each,
of which ~300 Constant) being gone: prefill 1,435 -> 846 nodes, text encoder 1,133 -> 529,
selector 1,006 -> 706; RSS after load 109.1 -> 106.4 MB, peak over 1,000 selections 133.0 ->
131.2 MB (bench child, two fresh runs each).
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bitgen_core.errors import ModelLoadError

CACHE_ENV, CACHE_SWITCH_ENV = "BITGEN_CACHE", "BITGEN_GRAPH_CACHE"
_FLOAT_GRAPHS = ("vision",)   # float graphs that keep every optimisation
# The output head is 18 nodes around one int8 table: its optimised form saves nothing and ran
# 4-5% slower (0.300 vs 0.286 ms a call), so it is loaded from the model directory as is.
_UNCACHED_GRAPHS = ("head",)
# The text encoder's output is a float memory encoding (no int8 codes downstream of the
# fusions' rounding): every optimisation, measured 0.85 -> 0.70 ms a call, z within 2.4e-7.
# Its inputs change shape with the text, so it keeps plain allocations (no arena).
_FUSED_GRAPHS = ("text_encoder",)


def session_options(threads: int, exact: bool = True) -> ort.SessionOptions:
    """`exact`: basic graph optimisations only. onnxruntime's extended fusions (RMSNorm into
    SimplifiedLayerNormalization, MatMulIntegerToFloat) reorder float arithmetic, which flips
    int8 activation codes at rounding boundaries; measured on a random nano model they moved
    robot probabilities by 0.012, while basic level matches torch to 2e-7. The float vision
    graph (convolutions) keeps every optimisation: it runs 2.5x faster with them."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if exact
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.log_severity_level = 3
    # Prompts and the decode cache change shape on every call: per-shape memory patterns and an
    # arena that keeps every peak would make RSS creep over a long-running process (measured:
    # 163 -> 309 MB over 1,000 selections). Plain allocations keep it flat. The vision graph
    # always sees (1, 3, S, S) and keeps an arena: without one each frame would fault its
    # activations in afresh (see tune_malloc). The arena alone, without a memory pattern, reuses
    # its freed blocks best-fit: the vision activations take 8.1 instead of 10.2 MB (peak over
    # 1,000 selections 131.5 -> 129.7 MB) for the same time (13.45 vs 13.40 ms CPU p50, A/B in one
    # process, bit-identical image tokens); the pattern's plan kept tensors apart that the arena
    # lets share memory.
    so.enable_mem_pattern = False
    so.enable_cpu_mem_arena = not exact
    # let the intra-op pool sleep between calls: a robot node shares its CPU with other software
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


_M_MMAP_THRESHOLD = -3   # glibc mallopt parameter


def tune_malloc() -> None:
    """Opt-in (BITGEN_MALLOC_TUNING=1): serve allocations above 128 kB with mmap, so freed ones
    go back to the OS at once.

    glibc otherwise raises its mmap threshold after the first large free and keeps later large
    blocks in the heap, where onnxruntime's graph optimiser leaves freed but resident memory
    behind. Measured here (tiny model, 200 selections): peak RSS 162 -> 156 MB, but vision
    encode 20.5 -> 25 ms (page faults on every large buffer), so latency wins by default. A
    process-wide setting; nothing happens off glibc."""
    if os.environ.get("BITGEN_MALLOC_TUNING", "0") != "1" or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass   # not glibc (musl, ...): its allocator returns large blocks by itself


TRIM_ENV = "BITGEN_TRIM_FILE_PAGES"
_MADV_DONTNEED = 4


def trim_file_pages() -> int:
    """Unmap the clean file-backed pages that importing and loading touched (on by default;
    BITGEN_TRIM_FILE_PAGES=0 turns it off); returns the bytes that were resident in them.

    Loading faults in shared-library code and read-only data that only loading runs:
    onnxruntime's model parser, graph optimiser and kernel registry, numpy's and Python's
    import-time code, libcrypto's start-up. They stayed in the process's RSS for good. Here
    every private, read-only, file-backed mapping with no anonymous (copied-on-write) page --
    whose resident pages are therefore exact copies of the file, still in the page cache -- is
    madvise(MADV_DONTNEED)'d: the pages leave this process's RSS, and the ones a selection does
    use come back on first touch as minor faults from the page cache (no I/O, nothing differs).
    What the kernel would reclaim from an idle process under memory pressure, done once, right
    after load. Writable mappings, relocated (RELRO) data and anything with an anonymous page
    are never touched: they hold state the file does not have.
    Measured (bench child, 1,000 selections): see the commit and reports/bench/bench.md."""
    if os.environ.get(TRIM_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return 0
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/smaps") as f:
            text = f.read()
    except (OSError, AttributeError):
        return 0
    dropped = 0
    span, rss, anon = None, 0, None

    def drop():
        nonlocal dropped
        if span is not None and anon == 0 and rss and madvise(span[0], span[1] - span[0], _MADV_DONTNEED) == 0:
            dropped += rss

    for line in text.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and not head[0].endswith(":"):   # a mapping's first line
            drop()
            perms, path = head[1], head[5] if len(head) > 5 else ""
            span, rss, anon = None, 0, None
            if path.startswith("/") and "w" not in perms and perms.endswith("p") and \
                    not path.endswith(" (deleted)"):
                span = tuple(int(x, 16) for x in head[0].split("-"))
        elif span is not None and head[0] == "Rss:":
            rss = int(head[1]) * 1024
        elif span is not None and head[0] == "Anonymous:":
            anon = int(head[1])
    drop()
    return dropped


def _options(name: str, threads: int) -> ort.SessionOptions:
    so = session_options(threads, exact=name not in _FLOAT_GRAPHS)
    if name in _FUSED_GRAPHS:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def build_sessions(files, threads: int, skip: tuple[str, ...] = ()) -> dict[str, ort.InferenceSession]:
    """One session per graph of a loaded ModelFiles (minus `skip`)."""
    # one (in, out) int8 array per layer, shared by every graph that uses it
    transposed: dict[str, np.ndarray] = {}
    sessions = {}
    # vision first: its graph optimiser's scratch memory, freed afterwards, is then reused by
    # the smaller sessions instead of raising the process's peak RSS on top of them
    names = sorted((n for n in files.config["graphs"] if n not in skip), key=lambda n: n != "vision")
    for name in names:
        g = files.config["graphs"][name]
        so = _options(name, threads)
        cached, good = _cached_graph(files, name)
        if good:
            try:   # optimised already: loading it with the optimiser off saves its scratch memory
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                sessions[name] = ort.InferenceSession(str(cached), so, providers=["CPUExecutionProvider"])
                continue
            except Exception:   # an entry this onnxruntime cannot load: rebuild it
                so = _options(name, threads)
        tmp = None
        if cached is not None:
            tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            so.optimized_model_filepath = str(tmp)
        init_names, values = [], []
        for t in g["ternary"]:
            arr = transposed.get(t["layer"])
            if arr is None:
                arr = transposed[t["layer"]] = np.ascontiguousarray(files.ternary[t["layer"]].T)
            if list(arr.shape) != list(t["shape"]):
                raise ModelLoadError(f"{g['file']}: packed layer {t['layer']} has shape {arr.shape}, "
                                     f"the graph expects {t['shape']}")
            init_names.append(t["initializer"])
            values.append(ort.OrtValue.ortvalue_from_numpy(arr))
        if init_names:
            so.add_external_initializers(init_names, values)
        try:
            sessions[name] = ort.InferenceSession(str(files.graph_files[name]), so,
                                                  providers=["CPUExecutionProvider"])
        except Exception as e:   # onnxruntime raises its own exception types
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise ModelLoadError(f"model file {g['file']} cannot be loaded by onnxruntime: "
                                 f"{e}".splitlines()[0][:300]) from None
        if tmp is not None:
            _publish(tmp, cached)
    return sessions


def _machine_signature() -> str:
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
        flags = " ".join(sorted(set(line.split(":", 1)[-1].split())))
    except OSError:
        pass
    return f"{platform.machine()}|{ort.__version__}|{flags}"


def _cached_graph(files, name: str) -> tuple[Path | None, bool]:
    """(where the optimised form of graph `name` lives on this machine, whether a good copy
    is there). (None, False) when the cache is off or its directory cannot be made."""
    if os.environ.get(CACHE_SWITCH_ENV, "1") == "0" or name in _UNCACHED_GRAPHS:
        return None, False
    entries = files.checked.manifest["files"]
    g = files.config["graphs"][name]
    key = hashlib.sha256()
    for rel in [g["file"]] + [f"weights/{t['layer']}.t2" for t in g["ternary"]]:
        key.update(f"{rel}={entries[rel]['sha256']};".encode())
    key.update(_machine_signature().encode())
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bitgen") / "graphs"
    path = root / f"{name}-{key.hexdigest()[:24]}.onnx"
    try:
        root.mkdir(parents=True, exist_ok=True)
        good = path.is_file() and _sha256(path) == path.with_suffix(".sha256").read_text().strip()
    except OSError:
        return (path, False) if root.is_dir() else (None, False)
    return path, good


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _publish(tmp: Path, dst: Path) -> None:
    """Move a freshly written optimised graph into the cache, its sidecar first; a cache that
    cannot be written (read-only home, full disk) just stays cold."""
    try:
        side = dst.with_suffix(".sha256")
        fd, side_tmp = tempfile.mkstemp(dir=dst.parent, prefix=".sha")
        with os.fdopen(fd, "w") as f:
            f.write(_sha256(tmp) + "\n")
        os.replace(side_tmp, side)
        os.replace(tmp, dst)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


