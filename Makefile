# khib-build: `make rootfs` builds the default image; `make test` runs the whole suite.
# Both first install what this Debian host is missing: Debian packages (apt-get, as root
# or through sudo) and a Python virtual environment in .venv/.

# The system Python, so unprivileged users (the rootless packing test) can run the venv.
PYTHON ?= /usr/bin/python3
CONFIG ?= configs/khib.yaml
OUTDIR ?= output

VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages needed to build images (a C toolchain for i386 and x86_64, the tools
# package builds run, libarchive for the Python binding, venv for the environment) ...
APT_BUILD := gcc gcc-multilib libc6-dev libc6-dev-i386 linux-libc-dev make patch bzip2 xz-utils \
	gzip libarchive13 \
	python3 python3-venv ca-certificates
# ... to build their kernel: Debian's kernel source and what building it needs ...
APT_KERNEL := linux-source-6.1 bc bison flex libelf-dev libssl-dev
# ... and to test them: QEMU to boot them, GNU cpio and bsdtar as independent readers,
# the reference decompressors, util-linux for unshare/setpriv, nginx (a WebDAV server as
# the shared cache) and zlib1g-dev (a host library that package sysroots must keep out);
# the kernel source's gen_init_cpio is the reference packer; makedumpfile reads exported
# images, and liblz4-dev lets the unit tests build khib-core for the host; mmdebstrap
# (with arch-test for i386) makes the Debian sid roots the newest makedumpfile runs in,
# and the Debian system that hibernates with khib, on a GPT disk fdisk's sfdisk lays out;
# reprotest varies the build's environment and diffoscope names what differs.
APT_TEST := qemu-system-x86 cpio libarchive-tools util-linux zstd lz4 xz-utils bzip2 \
	nginx zlib1g-dev makedumpfile liblz4-dev mmdebstrap arch-test fdisk reprotest \
	diffoscope-minimal faketime disorderfs
# ... Debian's own Python packages of khib-build's runtime dependencies (an installed
# khib-build runs on them; the suite checks it does) ...
APT_PYTHON := python3-jinja2 python3-yaml python3-libarchive-c python3-requests \
	python3-zstandard python3-lz4 python3-matplotlib python3-rich python3-pyelftools \
	python3-kconfiglib
# ... Debian's tools to build and check khib-build's own Debian package (debian/), whose
# setuptools and wheel also install khib-build for Debian's Python in the suite ...
APT_DEB := dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all \
	python3-setuptools python3-wheel lintian
# ... and GNU time for the benchmarks. All of them are installed together by `make setup`
# before anything is built: a package installed later (linux-source-6.1 once pulled a
# newer linux-libc-dev) would change the C library headers under finished builds.
APT_ALL := $(sort $(APT_BUILD) $(APT_KERNEL) $(APT_TEST) $(APT_PYTHON) $(APT_DEB) time)

# Set-up (apt, the venv, pip) says what it does in a line and writes the tools' own
# output to .setup.log; a failure shows the log's tail. `make V=1 ...` shows it all.
SETUP_LOG := .setup.log
QUIET := $(if $(V),,>> $(SETUP_LOG) 2>&1 || { tail -n 30 $(SETUP_LOG) >&2; \
	echo "failed: see $(SETUP_LOG)" >&2; exit 1; })

# Install the named Debian packages that are not installed yet.
define apt_ensure
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		{ $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			$(SUDO) apt-get install -y -q --no-install-recommends $$missing; } $(QUIET); \
	fi
endef

.PHONY: setup setup-test rootfs kernel test check matrix demo-system lint docs bench bench-rebuild bench-suite \
	clean distclean dist install

setup: $(VENV)/.runtime
	$(call apt_ensure,$(APT_ALL))

setup-test: setup $(VENV)/.test

# khib-build is installed editable with the venv's own setuptools (Debian 12's, as the
# Debian package is built), and wheel for it.
PIP_EDITABLE := $(BIN)/pip install -q --no-build-isolation -e

$(VENV)/bin/python:
	$(call apt_ensure,python3 python3-venv)
	@echo "making the Python environment $(VENV) (log: $(SETUP_LOG))"
	@$(PYTHON) -m venv $(VENV) $(QUIET)
	@$(BIN)/python -m pip install -q --upgrade pip wheel $(QUIET)

$(VENV)/.runtime: pyproject.toml $(VENV)/bin/python
	@echo "installing khib-build and its dependencies into $(VENV)"
	@$(PIP_EDITABLE) . $(QUIET)
	@touch $@

$(VENV)/.dist: pyproject.toml $(VENV)/.runtime
	@echo "installing the packaging tools into $(VENV)"
	@$(PIP_EDITABLE) '.[dist]' $(QUIET)
	@touch $@

# The test extras include the dist ones (test_packaging runs make install), so .dist is
# fresh too: nothing reinstalls the package while the suite runs.
$(VENV)/.test: pyproject.toml $(VENV)/.runtime
	@echo "installing the test tools into $(VENV)"
	@$(PIP_EDITABLE) '.[test]' $(QUIET)
	@touch $(VENV)/.dist $@

rootfs: setup
	$(BIN)/khib-build rootfs -c $(CONFIG) -o $(OUTDIR)

# The kernel the image needs (output/bzImage), from Debian's linux-source-6.1.
kernel: setup
	$(BIN)/khib-build kernel -c $(CONFIG) -o $(OUTDIR)

lint: setup-test
	$(BIN)/ruff check .

# Three workers on two cores: with two, the cores idled 15 % of the time (tests waiting
# on sleeps, servers and subprocesses); a third fills those gaps. Whole test files each
# (a file's fixtures are built once per run), the longest files first (tests/conftest.py
# orders them) so that the workers end together. The images and kernels the tests share
# are built once per run: the first worker that needs one builds it, the others wait and
# read it (tests/conftest.py).
TEST_WORKERS ?= 3
test: setup-test lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The kernel matrix: every row of configs/kernels/matrix.yaml (a distribution-like A of
# each release and arch hibernating with khib's B; `make test` runs the rows marked ci),
# then docs/kernels.md from the results. Kernels come from the user's build cache, so a
# second run only re-runs the rows.
MATRIX_RESULTS ?= $(OUTDIR)/matrix
matrix: setup-test
	rm -rf $(MATRIX_RESULTS)
	KHIB_MATRIX=all KHIB_MATRIX_RESULTS=$(abspath $(MATRIX_RESULTS)) \
		$(BIN)/python -m pytest -n 2 --dist loadgroup tests/test_kernels.py; \
		status=$$?; $(BIN)/python -m tests.kernels_doc $(MATRIX_RESULTS) docs/kernels.md; exit $$status

# A Debian 12 system that hibernates with khib (docs/system.md), in $(OUTDIR)/system: a
# GPT disk (the root, ext4, and khib's partition), A's kernel and Debian's initramfs for
# it, the khib package installed; it prints the command that boots it.
SYSTEM_KERNEL := configs/kernels/a-7.2-x86_64.yaml
demo-system: setup-test
	$(BIN)/khib-build kernel -c $(SYSTEM_KERNEL) -o $(OUTDIR)/system-kernel
	$(BIN)/khib-build deb -c configs/khib-x86_64.yaml -o $(OUTDIR)/system-deb
	$(BIN)/python -m tests.system $(OUTDIR)/system-kernel/bzImage \
		$(OUTDIR)/system-deb/khib_*.deb $(OUTDIR)/system

# The fast subset while working: everything but the tests marked slow (QEMU boots, kernel
# and scratch builds), under two minutes warm.
check: setup-test lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

# For packagers: the sdist and wheel (recipes, configs and overlays inside), a man page and
# bash completion generated from the argument parser, all in dist/. Built with the
# venv's setuptools (Debian 12's, as the Debian package is), without fetching another.
# Dated by the last commit (SOURCE_DATE_EPOCH), so the same tree gives the same files.
dist: export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
dist: $(VENV)/.dist
	rm -rf dist
	$(BIN)/python -m build -q --no-isolation -o dist .
	$(BIN)/python -m khib_build.cli.manual man > dist/khib-build.1
	$(BIN)/python -m khib_build.cli.manual bash > dist/khib-build.bash

# make install PREFIX=/usr DESTDIR=pkgroot: the wheel installed for $(PYTHON), in its
# distribution layout (Debian: PREFIX/lib/python3/dist-packages; its scripts
# start with $(PYTHON)), the man page and the completion. Runtime dependencies are the
# system's (see pyproject.toml).
PREFIX ?= /usr/local
DESTDIR ?=
install: dist
	@$(PYTHON) -c 'import jinja2, yaml, libarchive, requests, zstandard, lz4, matplotlib, rich, elftools, kconfiglib' 2>/dev/null || \
		{ echo "make install: $(PYTHON) lacks khib-build's runtime dependencies; on Debian: apt-get install $(APT_PYTHON)" >&2; exit 1; }
	PYTHONPATH="$$($(BIN)/python -c 'import installer, os; print(os.path.dirname(os.path.dirname(installer.__file__)))')" \
		DEB_PYTHON_INSTALL_LAYOUT=deb $(PYTHON) -m installer --destdir "$(DESTDIR)/" \
		--prefix "$(PREFIX)" dist/*.whl
	install -D -m 644 dist/khib-build.1 "$(DESTDIR)$(PREFIX)/share/man/man1/khib-build.1"
	install -D -m 644 dist/khib-build.bash \
		"$(DESTDIR)$(PREFIX)/share/bash-completion/completions/khib-build"

clean:
	rm -rf $(OUTDIR)

distclean: clean
	rm -rf $(VENV) $(SETUP_LOG) build dist *.egg-info

# The packing and saving benchmarks (bench/RESULTS.md records their figures); GNU time
# measures. bench/guest.py times docs/jump.md's five commands and writes its figures
# into bench/RESULTS.md and docs/jump.md. bench/hibernate.py hibernates the same A with
# the kernel's own hibernation and with khib (QEMU TCG, x86_64 at 512 MiB, 2 GiB and
# 4 GiB, 3 runs each; i386 at 512 MiB and 2 GiB, once; swsusp with LZO and with LZ4 on
# the 7.2 kernel of the matrix) and writes its tables there.
bench: setup-test
	$(BIN)/python bench/pack.py
	$(BIN)/python bench/save.py
	$(BIN)/python bench/guest.py
	$(BIN)/python bench/hibernate.py --memory 512 2048 4096
	$(BIN)/python bench/hibernate.py --arch i386 --memory 512 2048 --reps 1
	$(BIN)/python bench/hibernate.py --config configs/kernels/a-7.2-x86_64.yaml \
	    --methods swsusp swsusp-lz4 --memory 512 2048

# The rebuild benchmark: no-op and incremental builds (bench/RESULTS.md).
bench-rebuild: setup-test
	$(BIN)/python bench/rebuild.py

# The suite's cold build floor: everything make test builds, from an empty cache.
bench-suite: setup-test
	$(BIN)/python bench/suite.py

# Regenerate the format reference and README's options table from the settings declarations.
docs: setup
	$(BIN)/python -m khib_build.reports.reference > docs/reference.md
	$(BIN)/python -m khib_build.reports.reference --readme README.md
