"""The repair plan: for each bitmap that is not valid, every step that brings the
chain back to a state where every remaining bitmap is valid, losing nothing else; no
step for the valid ones; and before them, the steps that a layer's own errors need
(a corrupt image, a backing file without a recorded format).

A finding's remediation repairs one copy; a plan repairs the bitmap: every copy goes,
in every layer, and a new one starts in the top with the next full backup. The steps
fit where the data came from (Chain.advice): qemu-img commands for images on disk,
virsh commands for a libvirt domain, QMP commands (to send with your own client) for
a running QEMU. kbrules never runs a step: `kbrules plan` prints them as a script for
a person to read, then run.

Pure: a Report in, steps out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence

from . import subjects
from .model import Bitmap, Chain, Domain, Layer, Report, Verdict
from .text import sh_quote

# Rule ids the plan reads; the rules themselves are in rules/*.yaml.
EXISTS, COMPLETE = "bitmap-exists", "chain-complete"
MAX_NAME = 1023  # bytes of a bitmap name that qcow2 can store


@dataclass(frozen=True)
class Step:
    """One step of a plan: what to do and why, and the command when there is one that
    can run here and now (argv, never a shell line)."""

    bitmap: Optional[str]  # the bitmap it repairs; None for a layer's own step
    layer: Optional[int]  # the layer it acts on, when one
    say: str
    command: Optional[tuple[str, ...]] = None


def plan(report: Report) -> tuple[Step, ...]:
    """Every step, in the order to take them: the layers' repairs first (a corrupt
    image refuses bitmap changes), then each bitmap that is not valid, in report order."""
    chain = report.chain
    held = [layer for layer in chain.layers if layer.shared_rw]
    if held:
        return (Step(None, held[0].layer,
                     f"Layer {held[0].layer} ({held[0].filename}) is open read-write in another "
                     f"program (read with --force-share): nothing can be repaired offline. Check the "
                     f"running VM instead (kbrules check --domain DOMAIN, or its QMP data)."),)
    steps = [step for f in report.findings if f.severity == "error"
             for step in _layer_steps(chain, f.layer, f.rule, f.message, f.commands, f.argv)]
    broken = [verdict for verdict in report.bitmaps if not verdict.valid]
    if broken:
        # Each name's copies, top first, from the index the rules use (jq's plan does
        # the same): a scan of the chain per broken bitmap made wide chains quadratic.
        _, contexts = subjects.contexts(chain, [v.name for v in broken])
        for verdict, bitmap in zip(broken, contexts["bitmap"]):
            steps += _bitmap_steps(chain, verdict, [(chain.layers[c.layer], c.bitmap) for c in bitmap.copies])
    return tuple(steps)


def _offline(chain: Chain) -> bool:
    """No program has the images open: qemu-img may change them."""
    return chain.source == "qemu-img" and (chain.domain is None or not chain.domain.running)


def _layer_steps(chain: Chain, layer: int, rule: str, message: str, commands: Sequence[str],
                 argv: Sequence[tuple[str, ...]]) -> list[Step]:
    """A layer's own error: the commands of its rule's remediation (rules/*.yaml marks
    them), run offline; a running VM must be shut down first."""
    if not commands:
        return [Step(None, layer, f"{rule}: {message}: see the finding's remediation.")]
    if not _offline(chain):
        return [Step(None, layer, f"{rule}: {message}. With the VM shut down: {c}") for c in commands]
    return [Step(None, layer, f"{rule}: {message}.", words) for words in argv]


def _shell_safe(name: str) -> bool:
    """A name that qemu-img can take in an argument: no NUL byte (no argv can hold
    one), and no longer than a qcow2 bitmap name may be."""
    return "\0" not in name and 0 < len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME


def _bitmap_steps(chain: Chain, verdict: Verdict, copies: Sequence[tuple[Layer, Bitmap]]) -> list[Step]:
    name = verdict.name
    failed = {f.rule for f in verdict.findings if f.severity == "error"}
    if EXISTS in failed:
        return []  # a name that no layer holds: nothing to repair, nothing to start
    if COMPLETE in failed:
        return [Step(name, None, f"Give kbrules the whole chain first (the input stops above the "
                                 f"base: a copy of bitmap {_q(name)} below cannot be seen), then plan again.")]
    holders = [layer for layer, _ in copies]
    if not _shell_safe(name):
        return [Step(name, h.layer, f"Bitmap {_q(name)} in layer {h.layer} ({h.filename}) has a name "
                                    f"that qemu-img cannot take: remove it with a tool that can, then take a "
                                    f"new full backup.") for h in holders]
    if chain.advice == "libvirt":
        return _libvirt_steps(chain, name, holders)
    if chain.advice == "qmp":
        return _qmp_steps(chain, name, holders)
    granularity = next((b.granularity for _, b in copies if b.granularity is not None), None)
    return [*(_remove(name, h) for h in holders), *_start(chain, name, granularity)]


def _q(name: str) -> str:
    return f"'{name}'"


def _tojson(value: object) -> str:
    """JSON text as jq's tojson writes it (the jq program says the same): compact,
    UTF-8, DEL escaped, keys sorted (as gojq writes every object)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).replace("\x7f", "\\u007f")


def _remove(name: str, layer: Layer) -> Step:
    return Step(name, layer.layer, f"Remove bitmap {_q(name)} from layer {layer.layer} ({layer.filename}).",
                ("qemu-img", "bitmap", "--remove", "--", layer.filename, name))


def _can_hold(layer: Layer) -> bool:
    return layer.format == "qcow2" and layer.compat != "0.10"


def _start(chain: Chain, name: str, granularity: Optional[int]) -> list[Step]:
    """A new bitmap in the top, with the next full backup (offline images); the
    granularity is that of its first copy that gives one."""
    top = chain.layers[0]
    backup = Step(name, None, f"Then take a new full backup, before anything writes to the chain again: "
                              f"bitmap {_q(name)} tracks every write from now on.")
    if not _can_hold(top):
        return [Step(name, 0, f"The top image {top.filename} cannot hold bitmaps (raw, or qcow2 "
                              f"version 2): take a new full backup, and start bitmaps in a qcow2 version 3 "
                              f"overlay.")]
    size = ("-g", str(granularity)) if granularity is not None else ()
    return [Step(name, 0, f"Start bitmap {_q(name)} anew in the top image ({top.filename}).",
                 ("qemu-img", "bitmap", "--add", *size, "--", top.filename, name)), backup]


def _libvirt_steps(chain: Chain, name: str, holders: Sequence[Layer]) -> list[Step]:
    """libvirt's own commands: deleting a checkpoint deletes every copy of its bitmap
    (a running domain); a shut-off domain's images take qemu-img, and libvirt 9 deletes
    only the record of an inactive domain's checkpoint (--metadata)."""
    assert chain.domain is not None
    domain = chain.domain
    checkpoint = any(d.name == domain.disk and d.checkpoint == "bitmap" and d.bitmap == name
                     for c in domain.checkpoints for d in c.disks)
    steps: list[Step] = []
    if domain.running:
        if checkpoint:
            metadata = () if holders else ("--metadata",)
            steps.append(Step(name, None, f"Delete checkpoint {_q(name)}: libvirt removes every copy of "
                                          f"its bitmap.", _virsh(domain, "checkpoint-delete", *metadata, "--",
                                                                 domain.name, name)))
        else:
            for h in holders:
                if h.layer == 0 and h.node is not None:
                    qmp = _tojson({"execute": "block-dirty-bitmap-remove",
                                   "arguments": {"node": h.node, "name": name}})
                    steps.append(Step(name, 0, f"Remove bitmap {_q(name)} from the top node ({h.node}).",
                                      _virsh(domain, "qemu-monitor-command", "--", domain.name, qmp)))
                else:
                    steps.append(Step(name, h.layer, f"With the domain shut off, remove bitmap {_q(name)} "
                                                     f"from layer {h.layer} (QEMU refuses to change a read-only "
                                                     f"backing node): qemu-img bitmap --remove -- "
                                                     f"{sh_quote(h.filename)} {sh_quote(name)}"))
    else:
        steps += [_remove(name, h) for h in holders]
        if checkpoint:
            steps.append(Step(name, None, f"Delete the record of checkpoint {_q(name)} (libvirt deletes only "
                                          f"the record of a shut-off domain's checkpoint).",
                              _virsh(domain, "checkpoint-delete", "--metadata", "--", domain.name, name)))
    steps.append(Step(name, None, f"Then take a full backup with a new checkpoint: "
                                  f"virsh {'-c ' + sh_quote(domain.connect) + ' ' if domain.connect else ''}backup-begin "
                                  f"{sh_quote(domain.name)} BACKUP.xml CHECKPOINT.xml, where "
                                  f"CHECKPOINT.xml is <domaincheckpoint><name>NAME</name></domaincheckpoint>"
                                  f"{' (start the domain first)' if not domain.running else ''}."))
    return steps


def _virsh(domain: Domain, *args: str) -> tuple[str, ...]:
    """A virsh command through the connection the domain was read with."""
    return ("virsh", *(("-c", domain.connect) if domain.connect else ()), *args)


def _qmp_steps(chain: Chain, name: str, holders: Sequence[Layer]) -> list[Step]:
    """A running QEMU without libvirt: QMP commands, for the client that talks to it."""
    steps = []
    for h in holders:
        if h.layer == 0:
            qmp = _tojson({"execute": "block-dirty-bitmap-remove", "arguments": {"node": h.node, "name": name}})
            steps.append(Step(name, 0, f"Send QMP: {qmp}"))
        else:
            steps.append(Step(name, h.layer, f"With the VM shut down (QEMU refuses to change a read-only "
                                             f"backing node): qemu-img bitmap --remove -- "
                                             f"{sh_quote(h.filename)} {sh_quote(name)}"))
    add = _tojson({"node": chain.layers[0].node, "name": name, "persistent": True})
    steps.append(Step(name, None, f"Then take a new full backup, and start the bitmap anew in the same QMP "
                                  f"transaction as the backup job: block-dirty-bitmap-add {add}."))
    return steps
