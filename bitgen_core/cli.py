"""`bitgen`: robot selection, memory edits, export, verification and benchmarks without ROS.

    bitgen select --task "inspect the flooded culvert" [--image frame.png] [--memory facts.json]
                  [--top-k 3] [--json] [--stream]
    bitgen select --batch tasks.jsonl --out selections.jsonl
    bitgen memory add --memory facts.json --key drone_grounded --fact "the drone is grounded"
    bitgen memory forget --memory facts.json --key drone_grounded
    bitgen memory list --memory facts.json [--json]
    bitgen memory audit --log facts.audit.log [--key K] [--tail N] [--json]
    bitgen export --checkpoint model.pt --out models/my_model      (needs torch: training extras)
    bitgen verify [MODEL_DIR]
    bitgen bench [--out-json bench.json] [--out-md bench.md]

`--model DIR` picks a model directory; without it the shipped default is used
($BITGEN_MODEL_DIR, else models/default of the checkout, else <prefix>/share/bitgen_ros/models/default).

Memory edits follow the node's rules (issue 7): the edit token is configured by
BITGEN_EDIT_TOKEN or BITGEN_EDIT_TOKEN_FILE (never a command-line value); without one, edits
are refused unless --allow-unauthenticated is given. The operator's token is read from
--token-file, from stdin with --token-stdin, or else is the configured one (whoever can read
the configured token is an operator). Every edit and refusal goes to the audit log
(--audit-log, default: the memory file with suffix .audit.log, as the node does).

Errors print one line to stderr and exit non-zero (1 input/usage, 2 model, 3 memory/auth);
no traceback. Only `bitgen export` imports torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bitgen_core.errors import AuthError, BitGenError, InputError, MemoryEditError, ModelLoadError, StoreCorruptError

EXIT_INPUT, EXIT_MODEL, EXIT_MEMORY = 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- helpers
def _read_image(path: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            if im.width * im.height > 8192 * 8192:
                raise CliError(f"image {path} is {im.width}x{im.height}, too large")
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise CliError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
        raise CliError(f"image {path} is unreadable: {e}".splitlines()[0]) from None


def _load_runtime(args, memory_path=None, **kw):
    from bitgen_core.runtime import BitGenRuntime
    return BitGenRuntime.load(args.model, memory_path=memory_path, threads=args.threads, **kw)


def _audit(args):
    from bitgen_core.audit import AuditLog
    path = args.audit_log or str(Path(args.memory).with_suffix(".audit.log"))
    return AuditLog(path, source="cli")


def _guard_and_token(args):
    from bitgen_core.auth import TOKEN_ENV, TOKEN_FILE_ENV, EditGuard, load_edit_token
    token = load_edit_token()
    guard = EditGuard(token, allow_unauthenticated=args.allow_unauthenticated, edits_per_minute=None)
    if args.token_stdin:
        supplied = sys.stdin.readline().strip()
    elif args.token_file:
        try:
            supplied = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise CliError(f"cannot read token file {args.token_file}: {e.strerror}", EXIT_MEMORY) from None
    elif os.environ.get(TOKEN_FILE_ENV):     # the operator's own credential, read the public way
        supplied = Path(os.environ[TOKEN_FILE_ENV]).read_text(encoding="utf-8").strip()
    else:
        supplied = os.environ.get(TOKEN_ENV)
    return guard, supplied


def _selection_record(sel, top_k: int) -> dict:
    return {"robots": sel.robots, "confidences": [round(c, 6) for c in sel.confidences],
            "top_k": [{"robot": r, "confidence": round(c, 6)}
                      for r, c in zip(sel.robots[:top_k], sel.confidences[:top_k])],
            "reasoning": sel.reasoning, "memory_keys_used": sel.memory_keys_used,
            "latency_ms": {k: round(v, 3) for k, v in sel.latency_ms.items()}, "model_id": sel.model_id}


# ----------------------------------------------------------------------------- commands
def cmd_select(args) -> int:
    if args.batch:
        if args.task or args.image:
            raise CliError("--batch takes tasks from the file; do not combine it with --task/--image")
        if not args.out:
            raise CliError("--batch needs --out OUT.jsonl")
        return _select_batch(args)
    if args.task is None:
        raise CliError("give --task TEXT (or --batch IN.jsonl --out OUT.jsonl)")
    image = _read_image(args.image) if args.image else None
    rt = _load_runtime(args, args.memory)
    stream = args.stream and not args.json
    on_token = (lambda piece: (sys.stdout.write(piece), sys.stdout.flush())) if stream else None
    if stream:
        sys.stdout.write("reasoning: ")
    sel = rt.select(args.task, image, top_k=args.top_k, max_trace_tokens=args.max_trace_tokens,
                    on_token=on_token)
    if args.json:
        print(json.dumps(_selection_record(sel, args.top_k), ensure_ascii=False))
        return 0
    if stream:
        print()
    for i, (r, c) in enumerate(zip(sel.robots[:args.top_k], sel.confidences[:args.top_k]), 1):
        print(f"{i}. {rt.catalog.get(r).name:<20} {c:.3f}")
    if not stream:
        print(f"reasoning: {sel.reasoning}")
    if sel.memory_keys_used:
        print(f"memory facts used: {', '.join(sel.memory_keys_used)}")
    print(f"latency: {sel.latency_ms['total']:.1f} ms  (model {sel.model_id})")
    return 0


def _select_batch(args) -> int:
    rt = _load_runtime(args, args.memory)
    base = Path(args.batch).parent
    try:
        src = open(args.batch, encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot read {args.batch}: {e.strerror}") from None
    ok = bad = 0
    with src, open(args.out, "w", encoding="utf-8") as out:
        for n, line in enumerate(src, 1):
            if not line.strip():
                continue
            rec_id = None
            try:
                try:
                    rec = json.loads(line)
                except ValueError:
                    raise InputError("not a JSON object") from None
                if not isinstance(rec, dict):
                    raise InputError("not a JSON object")
                rec_id = rec.get("id", n)
                image = None
                if rec.get("image"):
                    p = Path(rec["image"])
                    image = _read_image(str(p if p.is_absolute() else base / p))
                t = time.perf_counter()
                sel = rt.select(rec.get("task"), image, top_k=args.top_k,
                                max_trace_tokens=args.max_trace_tokens)
                latency = (time.perf_counter() - t) * 1e3
            except (BitGenError, CliError) as e:
                bad += 1
                print(f"line {n} (id {rec_id!r}) skipped: {e}", file=sys.stderr)
                continue
            out.write(json.dumps({"id": rec_id, "robots": sel.robots,
                                  "confidences": [round(c, 6) for c in sel.confidences],
                                  "reasoning": sel.reasoning, "memory_keys_used": sel.memory_keys_used,
                                  "latency_ms": round(latency, 3)}, ensure_ascii=False) + "\n")
            ok += 1
    print(f"{ok} selections written to {args.out}, {bad} lines skipped", file=sys.stderr)
    return 0 if ok or not bad else EXIT_INPUT


def cmd_memory(args) -> int:
    if args.memory_cmd == "audit":
        from bitgen_core.audit import audit_files, format_record, read_audit
        if not audit_files(args.log):
            raise CliError(f"no audit log at {args.log}", EXIT_MEMORY)
        records = list(read_audit(args.log, key=args.key, action=args.action, since=args.since))
        if args.tail is not None:
            records = records[-args.tail:] if args.tail > 0 else []
        for rec in records:
            print(json.dumps(rec) if args.json else format_record(rec))
        return 0
    if args.memory_cmd == "list":
        from bitgen_core.store import MemoryStore
        facts = MemoryStore(args.memory).load()   # no model needed to read the store
        if args.json:
            print(json.dumps([{"key": f.key, "text": f.text, "written_at": f.written_at} for f in facts],
                             ensure_ascii=False))
        elif not facts:
            print(f"no facts in {args.memory}")
        for f in facts if not args.json else []:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.written_at))
            print(f"{f.key:<24} {stamp}  {f.text}")
        return 0
    guard, supplied = _guard_and_token(args)
    rt = _load_runtime(args, args.memory, edit_guard=guard, audit_log=_audit(args))
    if args.memory_cmd == "add":
        result = rt.memory.write(args.key, args.fact, token=supplied)
    else:
        result = rt.memory.forget(args.key, token=supplied)
    if not result.success:
        raise CliError(result.message, EXIT_MEMORY)
    print(f"{result.message} ({result.count} facts in {args.memory})")
    return 0


def cmd_verify(args) -> int:
    from bitgen_core.runtime.engine import default_model_dir
    from bitgen_core.runtime.manifest import verify_model_dir
    report = verify_model_dir(args.model_dir or args.model or default_model_dir())
    print(report.summary())
    return 0


def cmd_export(args) -> int:
    try:
        from training.export import main as export_main
    except ImportError as e:
        raise CliError(f"export needs the training extras (torch, onnx): {e}; "
                       "pip install -r requirements-train.txt") from None
    argv = ["--checkpoint", args.checkpoint, "--out", args.out]
    if args.model_id:
        argv += ["--model-id", args.model_id]
    if args.force:
        argv.append("--force")
    return export_main(argv)


def cmd_bench(args) -> int:
    from bitgen_core.bench import main as bench_main
    return bench_main(args)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bitgen", description="BitGen robot selection without ROS.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help="exported model directory (default: the shipped model)")
    common.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("select", parents=[common], help="rank the fleet's robots for a task")
    s.add_argument("--task", help="the task in words")
    s.add_argument("--image", help="camera image (PNG/JPEG)")
    s.add_argument("--memory", help="memory store file whose facts apply")
    s.add_argument("--top-k", type=int, default=3)
    s.add_argument("--max-trace-tokens", type=int, default=32)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--stream", action="store_true", help="print the reasoning while it is generated")
    s.add_argument("--batch", help="JSONL input, one {\"id\", \"task\", \"image\"?} per line")
    s.add_argument("--out", help="JSONL output for --batch")
    s.set_defaults(func=cmd_select)

    m = sub.add_parser("memory", help="edit or inspect the episodic memory store")
    msub = m.add_subparsers(dest="memory_cmd", required=True)
    edit = argparse.ArgumentParser(add_help=False, parents=[common])
    edit.add_argument("--memory", required=True, help="memory store file")
    edit.add_argument("--key", required=True)
    edit.add_argument("--token-file", help="file holding the operator's edit token")
    edit.add_argument("--token-stdin", action="store_true", help="read the edit token from stdin")
    edit.add_argument("--allow-unauthenticated", action="store_true",
                      help="allow edits when no edit token is configured (trusted single host)")
    edit.add_argument("--audit-log", help="audit log (default: MEMORY with suffix .audit.log)")
    a = msub.add_parser("add", parents=[edit], help="store a fact (replaces the same key)")
    a.add_argument("--fact", required=True)
    msub.add_parser("forget", parents=[edit], help="forget a fact")
    ls = msub.add_parser("list", help="list the stored facts")
    ls.add_argument("--memory", required=True)
    ls.add_argument("--json", action="store_true")
    au = msub.add_parser("audit", help="print the audit log, oldest first")
    au.add_argument("--log", required=True)
    au.add_argument("--key")
    au.add_argument("--action")
    au.add_argument("--since", help="ISO time")
    au.add_argument("--tail", type=int)
    au.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_memory)

    e = sub.add_parser("export", help="checkpoint -> model directory (needs torch)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--model-id")
    e.add_argument("--force", action="store_true")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("verify", parents=[common], help="check a model directory")
    v.add_argument("model_dir", nargs="?")
    v.set_defaults(func=cmd_verify)

    b = sub.add_parser("bench", parents=[common], help="latency / memory / size benchmark")
    from bitgen_core.bench import add_arguments
    add_arguments(b)
    b.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        msg, code = str(e), e.code
    except ModelLoadError as e:
        msg, code = str(e), EXIT_MODEL
    except (AuthError, MemoryEditError, StoreCorruptError) as e:
        msg, code = str(e), EXIT_MEMORY
    except BitGenError as e:
        msg, code = str(e), EXIT_INPUT
    except KeyboardInterrupt:
        msg, code = "interrupted", 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        msg, code = f"{e.filename or ''}: {e.strerror or e}".strip(": "), EXIT_INPUT
    print(f"error: {' '.join(msg.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
