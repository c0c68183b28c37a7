# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages the test suite needs: loop-mounted USB sticks (ext4, exFAT through FUSE),
# a virtual display with a clipboard tool, Chromium for the review UI's browser tests, and for the
# installer tests binutils (PyInstaller strips the binary), systemd (systemd-analyze verify) and shellcheck;
# for egress (git pushes and uploads) the ssh client and sftp server, rsync, curl, wget, rclone, and
# gcc and make for bench/exec_load.py's build.
APT_PACKAGES := e2fsprogs exfatprogs exfat-fuse fuse3 xvfb xclip chromium binutils systemd shellcheck sharutils 7zip zstd lz4 xxd git openssh-client openssh-sftp-server rsync curl wget rclone gcc make libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui poppler-utils libimage-exiftool-perl

.PHONY: run demo test lint venv apt bench clean agent-binary deb

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,dev]'
	touch $(STAMP)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: apt venv lint
	$(PY) -m pytest

# ruff (rules in pyproject.toml) over everything, mypy over the product's packages; both part of make test.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The whole product: a collector on SQLite under var/ and an enrolled local agent (Ctrl-C stops both).
run: venv
	$(PY) scripts/run_product.py

# The detection engine alone: scan the bundled demo tree with the starter packs.
demo: venv
	$(PY) scripts/demo.py

# The one-file agent binary (dist/dlp-agent) and its Debian package (dist/dlp-agent_VERSION_ARCH.deb);
# installer/README.md describes both.
agent-binary: venv
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller installer/dlp-agent.spec

deb: agent-binary
	installer/linux/build-deb.sh dist/dlp-agent dist

bench: venv
	$(PY) bench/scan.py
	$(PY) bench/bigfile.py
	$(PY) bench/daemon.py
	$(PY) bench/signatures.py
	$(PY) bench/e2e.py
	$(PY) bench/egress.py

clean:
	rm -rf $(VENV) var bench/.corpus bench/.out
