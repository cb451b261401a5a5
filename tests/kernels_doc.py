"""docs/kernels.md from the kernel matrix's results (`make matrix`): each row of
configs/kernels/matrix.yaml with what its run found, a row that failed with its reason,
a row with no result said to be not run. Usage: python -m tests.kernels_doc RESULTS OUT"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.test_kernels import MATRIX, row_id

HEAD = """# Users' kernels

khib's B is always khib's own small kernel (Linux 6.1, built by `khib-build kernel`); A
is whatever the user runs. Each row below is a distribution-like A
(`configs/kernels/a-<release>-<arch>.yaml`: the khib image as its user space, KASLR,
RANDOMIZE_MEMORY, SPARSEMEM_VMEMMAP, NR_CPUS=512 on x86_64; PAE on i386; page poisoning
built in; `kernel_role: a`, so no khib patch, only the fixes its release lacks) that
hibernates across a power-off under QEMU TCG: a tmpfs file, a process and a token in A,
`khib hibernate` with a key, a changed copy of the image refused, then the resume, after
which A's file, process, token and clock are checked with every CPU online. The free-page
walk must agree with A's own count (NR_FREE_PAGES, after `vm/stat_refresh`) within 2 %,
and makedumpfile (Debian sid's, in a sid root) reading `khib export`'s core with `-d 16`
within 1 % of khib-save.

`make matrix` runs every row and writes this page; `make test` runs the row marked
"(ci)". Kernels come from the build cache: a second run only re-runs the rows. The 5 GiB
i386 row's A puts a token in a page above 4 GiB, found again after the resume; its B is
khib's i386 kernel with PAE (`configs/kernels/b-pae-i386.yaml`), and QEMU runs it on its
most capable CPU model (`khib-build boot` does so past 4 GiB: QEMU's default i386 CPU has
32 physical address bits).

What A needs, by release (the linux recipe's `backports`):

- **6.1 x86_64**: the backport of 07fa619f2a40 ("x86/kexec: Restore GDT on return from
  ::preserve_context kexec", 6.13, also 6.12.5): without it A triple-faults on the way
  back. 6.12 (6.12.117) and 7.2 carry it.
- **i386, every release**: the same GDT restore in `relocate_kernel_32.S`, and CR4.PAE
  put back before paging is enabled on the return (a PAE A resets otherwise); upstream
  has neither, and both patches are written to be sent there
  (`recipes/linux/patches/upstream/`).
- **No A needs a patch for its real-mode trampoline**: B's boot writes its own over A's
  below 640 KiB, so B keeps what it found there, gives it back when it jumps back and
  exports it for the image (`recipes/linux/patches/b/`, B's kernel only).

Known beyond this matrix: on a CPU with CET, A's return path sets CR4.CET while CR0.WP is
still clear (a #GP) on every release up to 7.2; QEMU TCG has no CET, so no row can show
it. B must use 5-level paging when A does (a CPU with LA57). Linux 7.2 as B does not
come back after "Suspending console(s)" here; khib's B stays 6.1.

"""


def cell(value: object) -> str:
    return "" if value is None else str(value)


def table(rows: list[dict[str, object]], results: Path) -> list[str]:
    lines = ["| release | arch | CPUs | memory | A's features | hibernate | free pages: walk / "
             "A's count | makedumpfile -d 16 | patches A carries | A built | save s | "
             "restore s | first run s | resume run s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        found = results / f"{row_id(row)}.json"
        name = f"{row['release']}{' (ci)' if row.get('ci') else ''}"
        head = [name, str(row["arch"]), str(row["cpus"]), f"{int(row['memory']) >> 10} GiB"
                if int(row["memory"]) >= 1024 else f"{row['memory']} MiB"]
        if not found.is_file():
            lines.append("| " + " | ".join([*head, "", "not run", *[""] * 8]) + " |")
            continue
        result = json.loads(found.read_text())
        if not result.get("passed"):
            why = " ".join(result.get("why") or ["?"]).replace("|", "\\|")[:300]
            lines.append("| " + " | ".join([*head, "", f"**fails**: {why}", *[""] * 8]) + " |")
            continue
        walk = result["walk"]
        dump = result.get("makedumpfile")
        said = cell(result.get("makedumpfile_said"))
        dump_cell = (f"{dump} ({(dump - walk[0]) / walk[0]:+.2%}), "
                     f"{result.get('makedumpfile_version')}{'; ' + said if said else ''}"
                     if dump is not None else f"cannot read it: {said}")
        high = " (a token above 4 GiB)" if row.get("high") else ""
        cells = [*head, ", ".join(result.get("features", [])), f"passes{high}",
                 f"{walk[0]} / {walk[1]} ({(walk[0] - walk[1]) / walk[1]:+.2%})", dump_cell,
                 "<br>".join(result.get("patches", [])) or "none",
                 cell(result.get("kernel")), cell(result.get("save")),
                 cell(result.get("write")), cell(result.get("first_boot")),
                 cell(result.get("resume_boot"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str]) -> int:
    results, out = Path(argv[0]), Path(argv[1])
    rows = yaml.safe_load((MATRIX / "matrix.yaml").read_text())["rows"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "?"
    ran = max((p.stat().st_mtime for p in results.glob("*.json")), default=time.time())
    stamp = time.strftime("%Y-%m-%d", time.gmtime(ran))
    text = HEAD + f"Run on {stamp}, commit {commit}, QEMU TCG on this project's CI machine.\n\n"
    text += "\n".join(table(rows, results)) + "\n"
    text += ("\n\"save s\" is khib-save's own time in B, \"restore s\" khib-restore's writing "
             "and verifying in the restore stage; \"first run s\" is the whole first QEMU "
             "process (A's boot and workload, the jump, B's boot and save, the power-off), "
             "\"resume run s\" the whole resume QEMU process (firmware, both stages, A's "
             "checks); \"A built\" is the time `khib-build kernel` took to build A (2 cores, "
             "with other builds and QEMU runs alongside), kept for the runs that find it "
             "cached.\n")
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
