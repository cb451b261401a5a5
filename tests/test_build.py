"""Package builds: failures name package, step and log; the cache restores built trees."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Sample, assert_ok, build_greet, khib, write_sample


def sample_with_mirror(root: Path) -> Sample:
    mirror = root / "mirror"
    mirror.mkdir(parents=True)
    sample = write_sample(root, ["http://127.0.0.1:9/hello-1.0.tar.gz"], [mirror.as_uri()])
    (mirror / sample.filename).write_bytes(sample.tarball)
    return sample


def test_failed_step_names_package_step_and_log(tmp_path: Path) -> None:
    sample = sample_with_mirror(tmp_path)
    recipe = tmp_path / "recipes" / "hello" / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace(
        "build:\n",
        "build:\n  - \"echo compiling the sample; echo 'oops: no such thing' >&2; exit 3\"\n"))
    out = tmp_path / "out"
    result = khib("rootfs", "-c", sample.config, "-o", out, "--dl-dir", tmp_path / "dl",
                  "--cache-dir", tmp_path / "cache")
    assert result.returncode == 1
    log = out / "logs" / "hello.log"
    assert f"package hello: step 'build 1/2' failed; log: {log}" in result.stderr
    assert "oops: no such thing" in result.stderr  # the log's last lines are shown
    assert "compiling the sample" in log.read_text()
    assert "Traceback" not in result.stderr
    assert not (out / "rootfs.gz").exists()
    assert not (tmp_path / "cache" / "packages" / "hello").exists()


def test_cache_hit_after_output_dir_is_removed(tmp_path: Path) -> None:
    sample = sample_with_mirror(tmp_path)
    common = ("-c", sample.config, "--dl-dir", tmp_path / "dl",
              "--cache-dir", tmp_path / "cache")
    first = khib("rootfs", "-o", tmp_path / "a", *common)
    assert_ok(first)
    assert "hello 1.0: built" in first.stderr
    second = khib("rootfs", "-o", tmp_path / "b", *common)
    assert_ok(second)
    assert "hello 1.0: cached" in second.stderr
    assert "building" not in second.stderr
    images = [(tmp_path / d / "rootfs.gz").read_bytes() for d in "ab"]
    assert images[0] == images[1]
    entries = list((tmp_path / "cache" / "packages" / "hello").iterdir())
    assert len(entries) == 1 and (entries[0] / "tree" / "usr" / "bin" / "hello").is_file()
    # --no-cache neither reads nor writes the cache.
    third = khib("rootfs", "-o", tmp_path / "c", "--no-cache", *common[:4])
    assert_ok(third)
    assert "hello 1.0: built" in third.stderr


def test_recipe_change_misses_the_cache(tmp_path: Path) -> None:
    sample = sample_with_mirror(tmp_path)
    common = ("-c", sample.config, "--dl-dir", tmp_path / "dl",
              "--cache-dir", tmp_path / "cache")
    assert_ok(khib("rootfs", "-o", tmp_path / "a", *common))
    recipe = tmp_path / "recipes" / "hello" / "recipe.yaml"
    recipe.write_text(recipe.read_text() + "# a comment changes the recipe's hash\n")
    result = khib("rootfs", "-o", tmp_path / "a", *common)
    assert_ok(result)
    assert "hello 1.0: built" in result.stderr


def test_package_from_its_own_src_folder(tmp_path: Path) -> None:
    listing = build_greet(tmp_path)
    assert "-rwxr-xr-x     0     0         25 bin/greet" in listing
