"""Tests for the fer_core.data readers (spec, csv_formats, npz, folders, ferplus): every format
-> FaceSet, the split rule, exact error messages.

All files are written into ``tmp_path``; tests that need the real FER2013 files from ``../shared``
skip with a reason when that folder is absent.
"""

from __future__ import annotations

import io
import re
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core.data.spec import BadRowsWarning, DataError, open_dataset, parse_spec

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013"
SAMPLE_CSV = SHARED / "sample_kaggle_format.csv"
REAL_NPZ = SHARED / "fer2013_train_publictest.npz"


# ---------------------------------------------------------------------------------------- helpers


def faces(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 48, 48), dtype=np.int64).astype(np.uint8)


def pix(face: np.ndarray) -> str:
    return " ".join(map(str, face.ravel().tolist()))


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_text(newline.join(lines) + newline)
    return path


def kaggle_file(path: Path, x: np.ndarray, y, usage, header: str = "emotion,pixels,Usage") -> Path:
    return write_lines(path, [header] + [f"{yy},{pix(f)},{u}" for f, yy, u in zip(x, y, usage)])


def usage_list(n_train: int, n_pub: int, n_priv: int = 0) -> list[str]:
    return ["Training"] * n_train + ["PublicTest"] * n_pub + ["PrivateTest"] * n_priv


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: the real FER2013 files live in the project's ../shared "
                    "folder, which is absent on this machine")
    return path


def assert_error(exc: pytest.ExceptionInfo, name: str, line: int | None, *words: str) -> None:
    msg = str(exc.value)
    assert name in msg, msg
    if line is not None:
        assert f"line {line}:" in msg, msg
    for w in words:
        assert w in msg, msg


def count(fs, split: str) -> int:
    return int((fs.split == split).sum())


# ---------------------------------------------------------------------------------------- spec


def test_parse_spec():
    assert parse_spec("synthetic") == ("synthetic", {})
    assert parse_spec("synthetic:n=12000,seed=0") == ("synthetic", {"n": "12000", "seed": "0"})
    assert parse_spec("faces.npz:split=test") == ("faces.npz", {"split": "test"})
    assert parse_spec("/data/fer2013.csv") == ("/data/fer2013.csv", {})
    assert parse_spec(r"C:\data\fer2013.csv") == (r"C:\data\fer2013.csv", {})
    assert parse_spec("a:b/c.csv") == ("a:b/c.csv", {})
    with pytest.raises(DataError):
        parse_spec("synthetic:lots")


def test_unknown_spec_option(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, x=faces(3), y=np.array([0, 1, 2]))
    with pytest.raises(DataError, match="unknown option"):
        open_dataset(f"{p}:colour=red")
    with pytest.raises(DataError, match="split="):
        open_dataset(f"{p}:split=holdout")


# ------------------------------------------------------------------------------- real sample


def test_real_sample_csv():
    path = need(SAMPLE_CSV)
    fs = open_dataset(str(path))
    assert len(fs) == 300 and fs.x.shape == (300, 48, 48) and fs.x.dtype == torch.uint8
    assert count(fs, "train") + count(fs, "val") == 200 and count(fs, "val") > 0
    assert count(fs, "test") == 100 and (fs.split[200:] == "test").all()
    assert fs.row.tolist() == list(range(300))
    first = path.read_text().splitlines()[1].split(",")
    assert int(fs.y[0]) == int(first[0])
    manual = np.array([int(v) for v in first[1].split()], dtype=np.uint8).reshape(48, 48)
    assert np.array_equal(fs.x[0].numpy(), manual)
    assert fs.synthetic is False and fs.ferplus_votes is None


# ------------------------------------------------------------------------------- CSV layouts


def test_kaggle_all_three_usages(tmp_path):
    x, y = faces(14), [i % 7 for i in range(14)]
    p = kaggle_file(tmp_path / "fer2013.csv", x, y, usage_list(8, 3, 3))
    fs = open_dataset(str(p))
    assert np.array_equal(fs.x.numpy(), x) and fs.y.tolist() == y
    assert fs.split.tolist() == ["train"] * 8 + ["val"] * 3 + ["test"] * 3  # no extra val slice
    assert fs.source == str(p)
    # the same file as a directory and with Windows line endings
    assert np.array_equal(open_dataset(str(tmp_path)).x.numpy(), x)
    q = tmp_path / "crlf" / "data.csv"
    q.parent.mkdir()
    q.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n"))   # BOM + CRLF
    fs2 = open_dataset(str(q))
    assert np.array_equal(fs2.x.numpy(), x) and fs2.split.tolist() == fs.split.tolist()


def test_icml_leading_spaces(tmp_path):
    x, y = faces(30, 1), [i % 7 for i in range(30)]
    use = usage_list(24, 6)
    lines = ["emotion, Usage, pixels"] + [f"{a},{u},{pix(f)}" for f, a, u in zip(x, y, use)]
    p = write_lines(tmp_path / "icml_face_data.csv", lines)
    fs = open_dataset(str(p))
    assert np.array_equal(fs.x.numpy(), x) and fs.y.tolist() == y
    assert count(fs, "test") == 6 and (fs.split[24:] == "test").all()     # only PublicTest -> test
    assert count(fs, "val") > 0 and count(fs, "train") + count(fs, "val") == 24
    assert np.array_equal(open_dataset(str(tmp_path)).x.numpy(), x)      # found inside a folder


def test_quoted_csv_and_odd_spacing(tmp_path):
    x = faces(5, 2)
    lines = ['"emotion","pixels","Usage"']
    for i, f in enumerate(x):
        vals = [str(v) for v in f.ravel().tolist()]
        vals[0] = vals[0].zfill(3)              # "007": leading zeros are still integers
        lines.append(f'{i},"  {"  ".join(vals[:10])}\t{" ".join(vals[10:])} ","Training"')
    fs = open_dataset(str(write_lines(tmp_path / "q.csv", lines)))
    assert np.array_equal(fs.x.numpy(), x) and fs.y.tolist() == list(range(5))


def test_fast_decoder_matches_python_parse(tmp_path):
    x = faces(40, 3)
    x[:, 0, :5] = [0, 9, 10, 99, 255]
    lines = ["emotion,pixels,Usage"] + [f"3, {pix(f)} ,Training" for f in x]
    p = write_lines(tmp_path / "big.csv", lines)
    fs = open_dataset(str(p), val_fraction=0)
    assert np.array_equal(fs.x.numpy(), x) and set(fs.split.tolist()) == {"train"}


def test_torchvision_layout(tmp_path):
    root = tmp_path / "root"
    d = root / "fer2013"
    d.mkdir(parents=True)
    xtr, xte = faces(21, 4), faces(6, 5)
    ytr = [i % 7 for i in range(21)]
    write_lines(d / "train.csv", ["emotion,pixels"] + [f"{a},{pix(f)}" for f, a in zip(xtr, ytr)])
    write_lines(d / "test.csv", ["pixels"] + [pix(f) for f in xte])
    for spec in (d, d / "train.csv", d / "test.csv", root):
        fs = open_dataset(str(spec))
        assert len(fs) == 27, spec
        assert np.array_equal(fs.x.numpy(), np.concatenate([xtr, xte]))
        assert fs.y[21:].tolist() == [-1] * 6 and fs.y[:21].tolist() == ytr
        assert (fs.split[21:] == "test").all() and count(fs, "val") > 0
        assert fs.row.tolist() == list(range(27))          # test rows continue after train rows
        assert not fs.labeled


def test_torchvision_labeled_test(tmp_path):
    xtr, xte = faces(14, 6), faces(4, 7)
    write_lines(tmp_path / "train.csv",
                ["emotion,pixels"] + [f"{i % 7},{pix(f)}" for i, f in enumerate(xtr)])
    write_lines(tmp_path / "test.csv", ["emotion,pixels"] + [f"5,{pix(f)}" for f in xte])
    fs = open_dataset(str(tmp_path))
    assert fs.y[14:].tolist() == [5] * 4 and (fs.split[14:] == "test").all()


def test_course_label_feature(tmp_path):
    x = faces(21, 8)
    names = ["angry", "Disgust", "fear", "happiness", "4", "surprised", "neutral"]
    p = write_lines(tmp_path / "course.csv",
                    ["label,feature"] + [f"{names[i % 7]},{pix(f)}" for i, f in enumerate(x)])
    fs = open_dataset(str(p))
    assert fs.y.tolist() == [i % 7 for i in range(21)]
    assert set(fs.splits) == {"train", "val"} and count(fs, "val") == 7   # 1 per class of 3


def test_unlabeled_pixels_only_file_is_test(tmp_path):
    p = write_lines(tmp_path / "mine.csv", ["pixels"] + [pix(f) for f in faces(3)])
    fs = open_dataset(str(p))
    assert fs.y.tolist() == [-1] * 3 and fs.split.tolist() == ["test"] * 3


# ---------------------------------------------------------------------------------------- images


def _save(path: Path, img, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def test_image_folders(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    _save(root / "train" / "Happy" / "a.png", Image.new("RGB", (48, 48), (200, 10, 10)))
    _save(root / "train" / "happy" / "b.png", Image.new("L", (48, 48), 100))
    _save(root / "train" / "Sadness" / "c.png", Image.new("RGBA", (48, 48), (0, 0, 0, 0)))
    _save(root / "train" / "anger" / "d.bmp", Image.new("L", (48, 48), 7))
    _save(root / "train" / "anger" / "d2.webp", Image.new("L", (48, 48), 7), lossless=True)
    for k in range(4):
        _save(root / "train" / "fear" / f"f{k}.png", Image.new("L", (48, 48), 30 + k))
    sixteen = Image.fromarray(np.full((48, 48), 100 * 257, dtype=np.uint16))
    assert sixteen.mode == "I;16"
    _save(root / "test" / "surprised" / "e.png", sixteen)
    _save(root / "test" / "Neutral" / "g.png", Image.new("L", (100, 80), 60))   # 100 wide x 80
    _save(root / "test" / "neutral" / "h.jpg", Image.new("RGB", (64, 64), (90, 90, 90)),
          quality=95)
    (root / "test" / "neutral" / ".DS_Store").write_bytes(b"junk")
    fs = open_dataset(str(root))
    assert fs.x.shape == (12, 48, 48) and fs.x.dtype == torch.uint8
    assert fs.row.tolist() == list(range(12))
    # sorted relative paths: test/Neutral/g, test/neutral/h, test/surprised/e, train/Happy/a,
    # train/Sadness/c, train/anger/d.bmp, train/anger/d2.webp, train/fear/f0-3, train/happy/b
    assert fs.y.tolist() == [6, 6, 5, 3, 4, 0, 0, 2, 2, 2, 2, 3]
    assert (fs.split[:3] == "test").all() and count(fs, "test") == 3 and count(fs, "val") > 0
    x = fs.x.numpy()
    assert (x[0] == 60).all()                             # 100x80 L image, resized
    assert abs(float(x[1].mean()) - 90) <= 2               # RGB JPEG
    assert (x[2] == 100).all()                             # 16-bit: 100*257 -> 100
    assert (x[3] == 67).all()                              # RGB (200,10,10) -> luma 67
    assert (x[4] == 255).all()             # transparent RGBA: composited on white, as uploads are
    assert (x[5] == 7).all() and (x[6] == 7).all() and (x[11] == 100).all()


def test_image_exif_orientation(tmp_path):
    from PIL import Image

    img = Image.new("L", (60, 40), 0)
    img.paste(255, (30, 0, 60, 40))             # left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6                            # "rotate 90 CW to display"
    _save(tmp_path / "d" / "train" / "sad" / "r.jpg", img, exif=exif.tobytes(), quality=95)
    fs = open_dataset(str(tmp_path / "d"), val_fraction=0)
    face = fs.x[0].numpy().astype(int)
    assert face[:16].mean() < 40 and face[-16:].mean() > 215    # now top black, bottom white


def test_flat_emotion_folders(tmp_path):
    from PIL import Image

    for k, emo in enumerate(["angry", "happy", "sad"]):
        for j in range(3):
            _save(tmp_path / emo / f"{j}.png", Image.new("L", (48, 48), k))
    fs = open_dataset(str(tmp_path))
    assert len(fs) == 9 and set(fs.splits) == {"train", "val"}


def test_corrupt_image(tmp_path):
    from PIL import Image

    for j in range(3):
        _save(tmp_path / "train" / "happy" / f"{j}.png", Image.new("L", (48, 48), j))
    bad = tmp_path / "train" / "happy" / "1b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError) as exc:
        open_dataset(str(tmp_path))
    assert_error(exc, "1b.png", None, "cannot read image")
    with pytest.warns(BadRowsWarning, match="skipped 1 bad row"):
        fs = open_dataset(str(tmp_path), skip_bad_rows=True)
    assert len(fs) == 3 and fs.row.tolist() == [0, 1, 3]     # 0.png 1.png [1b.png] 2.png


def test_unknown_emotion_folder(tmp_path):
    from PIL import Image

    _save(tmp_path / "train" / "contempt" / "a.png", Image.new("L", (48, 48)))
    with pytest.raises(DataError, match="unknown emotion folder 'contempt'"):
        open_dataset(str(tmp_path))


def test_decode_image_sources_and_transparency(tmp_path):
    from PIL import Image

    from fer_core.data.decode import decode_image, image_to_face, to_gray

    img = Image.new("RGBA", (10, 6), (0, 0, 0, 0))        # transparent, one opaque pixel
    img.putpixel((0, 0), (10, 20, 30, 255))
    p = tmp_path / "a.png"
    img.save(p)
    data = p.read_bytes()
    left_at_end = io.BytesIO(data)
    left_at_end.read()                                     # e.g. an upload read once already
    for src in (data, p, str(p), left_at_end):
        rgb = decode_image(src)
        assert rgb.shape == (6, 10, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
        assert rgb[0, 0].tolist() == [10, 20, 30] and (rgb[1:] == 255).all()   # alpha on white
    half = Image.new("LA", (4, 4), (0, 128))               # black at 50% over white -> grey
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0                           # palette entry 0 fully transparent
    for name, im, want in (("la.png", half, 127), ("p.png", pal, 255)):
        im.save(tmp_path / name)
        face = image_to_face(tmp_path / name)
        assert face.shape == (48, 48) and abs(int(face[0, 0]) - want) <= 1, name
    assert image_to_face(p, 32).shape == (32, 32)
    assert to_gray(np.full((2, 2, 3), (200, 10, 10), np.uint8)).tolist() == [[67, 67], [67, 67]]


def test_decode_image_errors(tmp_path, monkeypatch):
    from PIL import Image

    from fer_core.data.decode import ImageError, decode_image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    png = buf.getvalue()
    for data, words in ((b"", "empty (0 bytes)"), (b"hello, not a picture", "not an image"),
                        (png[: len(png) // 2], "truncated or corrupt")):
        with pytest.raises(ImageError, match=re.escape(words)) as exc:
            decode_image(data, name="up.png")
        assert str(exc.value).startswith("up.png: ")
    with pytest.raises(ImageError, match="is a directory"):
        decode_image(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(png)


# ---------------------------------------------------------------------------------------- npz


def test_npz_with_usage_rows_votes(tmp_path):
    x, y = faces(10, 9), np.arange(10) % 7
    votes = np.arange(100).reshape(10, 10)
    p = tmp_path / "f.npz"
    np.savez(p, x=x, y=y, usage=np.array(usage_list(6, 2, 2)), row=np.arange(10) + 100,
             ferplus_votes=votes)
    fs = open_dataset(str(p))
    assert np.array_equal(fs.x.numpy(), x) and fs.y.tolist() == y.tolist()
    assert fs.split.tolist() == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    assert fs.row.tolist() == list(range(100, 110))
    assert np.array_equal(fs.ferplus_votes, votes)


def test_npz_without_usage_and_split_option(tmp_path):
    x, y = faces(14, 10), np.arange(14) % 7
    p = tmp_path / "plain.npz"
    np.savez_compressed(p, x=x, y=y)
    fs = open_dataset(str(p))
    assert set(fs.splits) == {"train", "val"} and count(fs, "val") == 7
    forced = open_dataset(f"{p}:split=test")
    assert forced.split.tolist() == ["test"] * 14 and forced.source == f"{p}:split=test"
    q = tmp_path / "private.npz"
    np.savez(q, x=x, y=y, usage=np.array(["PrivateTest"] * 14))
    assert open_dataset(str(q)).split.tolist() == ["test"] * 14


def test_npz_bad_inputs(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, y=np.zeros(3))
    with pytest.raises(DataError, match="missing array 'x'"):
        open_dataset(str(p))
    np.savez(p, x=faces(3), y=np.array([0, 9, 1]))
    with pytest.raises(DataError) as exc:
        open_dataset(str(p))
    assert_error(exc, "bad.npz", None, "entry 1", "label 9")
    with pytest.warns(BadRowsWarning, match="skipped 1 bad row"):
        assert open_dataset(str(p), skip_bad_rows=True).row.tolist() == [0, 2]
    np.savez(p, x=np.zeros((3, 32, 32), np.uint8), y=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="shape"):
        open_dataset(str(p))
    p.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(DataError, match="bad.npz"):
        open_dataset(str(p))


def test_real_npz():
    path = need(REAL_NPZ)
    t0 = time.process_time()          # CPU time: wall time is meaningless on shared CI cores
    fs = open_dataset(str(path))
    assert time.process_time() - t0 < 5.0
    assert len(fs) == 28709 + 3589
    assert count(fs, "test") == 3589 and count(fs, "val") > 0
    assert count(fs, "train") + count(fs, "val") == 28709
    assert fs.ferplus_votes is not None and fs.ferplus_votes.shape == (len(fs), 10)
    assert fs.row.max() < 35887


# ---------------------------------------------------------------------------------------- FER+


def test_ferplus_votes_by_row(tmp_path):
    x = faces(6, 11)
    lines = ["emotion,pixels,Usage"] + [f"{i},{pix(f)},Training" for i, f in enumerate(x)]
    lines[3] = "2,1 2 3,Training"           # data row 2 is bad -> skipped, others keep row keys
    p = write_lines(tmp_path / "fer2013.csv", lines)
    fp = tmp_path / "fer2013new.csv"
    header = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,"
              "unknown,NF")
    write_lines(fp, [header] + [f"Training,fer{i:07d}.png," + ",".join([str(i)] * 10)
                                for i in range(6)])
    with pytest.warns(BadRowsWarning):
        fs = open_dataset(str(p), ferplus=str(fp), skip_bad_rows=True)
    assert fs.row.tolist() == [0, 1, 3, 4, 5]
    assert fs.ferplus_votes.shape == (5, 10) and fs.ferplus_votes[:, 0].tolist() == [0, 1, 3, 4, 5]
    lines[3] = lines[2]                    # repair the CSV; now break the FER+ file
    write_lines(p, lines)
    write_lines(fp, [header, "Training,a.png,1,2,3,4,5,6,7,8,9,x"])
    with pytest.raises(DataError) as exc:
        open_dataset(str(p), ferplus=str(fp))
    assert_error(exc, "fer2013new.csv", 2, "not an integer")
    write_lines(fp, [header, "Training,a.png,1,2,3,4,5,6,7,8,9,0"])
    with pytest.raises(DataError, match="row keys"):
        open_dataset(str(p), ferplus=str(fp))


# ---------------------------------------------------------------------------------------- bad CSVs


def _good_lines(n: int = 4) -> list[str]:
    return ["emotion,pixels,Usage"] + [f"{i % 7},{pix(f)},Training" for i, f in enumerate(faces(n))]


@pytest.mark.parametrize("line_no,bad_row,words", [
    (3, "1,1 2 3,Training", ["has 3 pixel values", "expected 2304"]),
    (4, "2,{p:x},Training", ["pixel 5 is not an integer", "'x'"]),
    (2, "0,{p:256},Training", ["pixel 5 = 256 is outside 0..255"]),
    (5, "3,{p:-1},Training", ["pixel 5 = -1 is outside 0..255"]),
    (5, "3,{p:1.5},Training", ["not an integer", "'1.5'"]),
    (3, "9,{p},Training", ["label 9"]),
    (4, "joyful,{p},Training", ["unknown label 'joyful'"]),
    (4, ",{p},Training", ["missing label"]),
    (3, "1,{p},Holdout", ["unknown Usage 'Holdout'"]),
    (2, "1,{p}", ["has 2 fields, expected 3"]),
    (3, "", ["empty line"]),
])
def test_bad_rows(tmp_path, line_no, bad_row, words):
    lines = _good_lines()
    good = pix(faces(1, 99)[0]).split()
    if "{p:" in bad_row:
        val = bad_row.split("{p:")[1].split("}")[0]
        good[4] = val
        bad_row = bad_row.replace("{p:" + val + "}", " ".join(good))
    bad_row = bad_row.replace("{p}", " ".join(good))
    lines[line_no - 1] = bad_row
    for quoted in (False, True):
        text = lines if not quoted else [lines[0]] + [
            ",".join(f'"{c}"' for c in ln.split(",")) if ln else ln for ln in lines[1:]]
        p = write_lines(tmp_path / f"bad_{int(quoted)}.csv", text)
        with pytest.raises(DataError) as exc:
            open_dataset(str(p))
        assert_error(exc, p.name, line_no, *words)
        assert exc.value.line == line_no and exc.value.path == str(p)
        with pytest.warns(BadRowsWarning, match="skipped 1 bad row"):
            fs = open_dataset(str(p), skip_bad_rows=True)
        assert len(fs) == 3 and line_no - 2 not in fs.row.tolist()


def test_exact_pass_only_for_a_file_with_faults(tmp_path, monkeypatch):
    from fer_core.data import csv_formats

    calls = []
    real = csv_formats._read_exact
    monkeypatch.setattr(csv_formats, "_read_exact", lambda *a: calls.append(a) or real(*a))
    lines = _good_lines(5)
    p = write_lines(tmp_path / "good.csv", lines)
    assert len(open_dataset(str(p))) == 5 and calls == []      # valid: pandas pass only
    lines[2] = "0," + lines[2].split(",", 1)[1].replace(" ", "\t", 7)   # tabs: still valid
    write_lines(p, lines)
    assert len(open_dataset(str(p))) == 5 and calls == []
    lines[3] = "1,1 2 3,Training"
    write_lines(p, lines)
    with pytest.raises(DataError, match="line 4: has 3 pixel values"):
        open_dataset(str(p))
    assert len(calls) == 1


def test_first_bad_line_is_reported_and_all_counted(tmp_path):
    lines = _good_lines(6)
    lines[5] = "1,1 2,Training"       # line 6: pixel count
    lines[3] = "8," + lines[3].split(",", 1)[1]   # line 4: label (reported first)
    p = write_lines(tmp_path / "two.csv", lines)
    with pytest.raises(DataError) as exc:
        open_dataset(str(p))
    assert_error(exc, "two.csv", 4, "label 8")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fs = open_dataset(str(p), skip_bad_rows=True)
    assert any("skipped 2 bad row(s) of 6" in str(w.message) for w in rec)
    assert fs.row.tolist() == [0, 1, 3, 5]


@pytest.mark.parametrize("content,line,words", [
    ("", 1, ["file is empty"]),
    ("emotion,pixels,Usage\n", 1, ["only a header"]),
    ("emotion,Usage\n0,Training\n", 1, ["missing pixel column"]),
])
def test_empty_and_missing_columns(tmp_path, content, line, words):
    p = tmp_path / "e.csv"
    p.write_text(content)
    with pytest.raises(DataError) as exc:
        open_dataset(str(p))
    assert_error(exc, "e.csv", line, *words)


def test_missing_header_and_missing_file(tmp_path):
    p = write_lines(tmp_path / "nohdr.csv", _good_lines()[1:])
    with pytest.raises(DataError) as exc:
        open_dataset(str(p))
    assert_error(exc, "nohdr.csv", 1, "missing header")
    with pytest.raises(DataError, match="no such file"):
        open_dataset(str(tmp_path / "nope.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset found"):
        open_dataset(str(tmp_path / "empty"))


def test_skip_everything_bad_is_an_error(tmp_path):
    p = write_lines(tmp_path / "allbad.csv", ["emotion,pixels,Usage", "0,1 2,Training"])
    with pytest.raises(DataError, match="no valid faces"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            open_dataset(str(p), skip_bad_rows=True)


# ---------------------------------------------------------------------------------------- splits


def test_val_slice_is_deterministic(tmp_path):
    x, y = faces(70, 12), [i % 7 for i in range(70)]
    p = kaggle_file(tmp_path / "d.csv", x, y, usage_list(60, 10))
    a, b = open_dataset(str(p), seed=3), open_dataset(str(p), seed=3)
    assert a.split.tolist() == b.split.tolist()
    c = open_dataset(str(p), seed=4)
    assert c.split.tolist() != a.split.tolist()
    assert count(a, "val") == count(c, "val") == 7          # stratified: 1 of 9-ish per class
    assert count(open_dataset(str(p), val_fraction=0.0), "val") == 0


def test_synthetic_split_with_stub(monkeypatch):
    calls = []

    def generate(n=12000, seed=0, label_noise=0.02):
        calls.append((n, seed, label_noise))
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (n, 48, 48)).astype(np.uint8), rng.integers(0, 7, n)

    stub = types.ModuleType("fer_core.data.synthetic")
    stub.generate = generate
    monkeypatch.setitem(sys.modules, "fer_core.data.synthetic", stub)
    import fer_core.data as pkg
    monkeypatch.setattr(pkg, "synthetic", stub, raising=False)
    fs = open_dataset("synthetic:n=200,seed=5,label_noise=0.1")
    assert calls == [(200, 5, 0.1)]
    assert fs.synthetic and fs.row.tolist() == list(range(200)) and fs.y.dtype == torch.int64
    assert (count(fs, "train"), count(fs, "val"), count(fs, "test")) == (160, 20, 20)
    again = open_dataset("synthetic:n=200,seed=5,label_noise=0.1")
    assert again.split.tolist() == fs.split.tolist()
    with pytest.raises(DataError, match="unknown option"):
        open_dataset("synthetic:m=3")
    with pytest.raises(DataError, match="FER\\+"):
        open_dataset("synthetic:n=10", ferplus="x.csv")


def test_synthetic_real_generator():
    pytest.importorskip("fer_core.data.synthetic", reason="SynthFER generator not available")
    fs = open_dataset("synthetic:n=60,seed=0")
    assert fs.x.shape == (60, 48, 48) and fs.synthetic
    assert set(fs.splits) == {"train", "val", "test"}
