"""Source `reuters21578`: the raw Reuters-21578 SGML files, turned into Keras's Reuters-46 data set exactly.

The rules (checked against Keras's published figures, see docs/data.md):
  1. walk reut2-000.sgm .. reut2-021.sgm in name order, documents in file order;
  2. a document takes part when its <TOPICS> holds at least one <D>; its label is the FIRST topic;
  3. keep topics that label at least 15 such documents (46 topics, 11,228 documents);
  4. label index = order of first appearance in the walk (0 cocoa, 1 grain, 2 veg-oil, 3 earn, ...);
  5. shuffle arange(n) with RandomState(113) and cut at int(n * 0.8): 8,982 train / 2,246 test.
Rules 2 and 3 are Keras's: the 1,455 training and 365 test wires that list other topics too are labelled by their
first alone, and 139 wires with topics are left out; a note says so (provenance "notes", printed first).

Text modes:
  title+body  the wire's own <TITLE> and <BODY> (the correct text);
  keras       the next <BODY> after the wire's <TOPICS>, as Keras's script searched for it. The 975 wires
              without a body of their own thereby get a LATER wire's body (one of them, the last body-less
              wire of reut2-006.sgm, gets the first body of reut2-007.sgm: the walk continues across files).

split="modapte" (docs/data.md, "Multi-label"): the standard benchmark split instead of Keras's.
  1. the wires whose <REUTERS> tag says TOPICS="YES": LEWISSPLIT="TRAIN" -> train, "TEST" -> test, "NOT-USED" left
     out (9,603 / 3,299 wires); fixed by the files, so data.split_seed does not apply;
  2. task "multi": every topic of a wire is a label (a topic listed twice counts once); label names are the topics
     of those wires sorted alphabetically; a wire without topics stays as a row of zeros, for preprocessing to drop
     (it has no kept topic). The provenance asks preprocessing to drop the topics without a test wire too
     ("topics_need_test_wire"), which with data.min_samples=1 leaves ModApte-90;
  3. task "single": the label is the first topic listed (Keras's rule): 1,223 training and 437 test wires lose their
     other topics; wires without topics are left out here (1,828 / 280); a note line says each; label names sorted
     alphabetically;
  4. text: title+body only (the wire's own); a brief (<TEXT TYPE="BRIEF">) is its title alone, an unprocessed wire
     (<TEXT TYPE="UNPROC">, no <TITLE>/<BODY> markup) is its whole <TEXT>. data.text keras is refused: it is
     Keras's reading of its own 11,228 wires.
"""

from __future__ import annotations

import bisect
import hashlib
import html
import os
import re
import tarfile
import tempfile
import urllib.request
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from reuters_ray.data.dataset import TextDataset
from reuters_ray.data.keras_reuters import keras_rule_note
from reuters_ray.errors import DataError
from reuters_ray.storage import sha256_file

ARCHIVE_URL = "https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.tar.gz"
ARCHIVE_NAME = "reuters21578.tar.gz"
MIN_TOPIC_DOCS = 15  # Keras's threshold for keeping a topic
TEST_SPLIT = 0.2  # Keras's default

# SHA-256 of the 22 SGML files of Reuters-21578, Distribution 1.0. A download must match them; a user's
# own copy that differs is still read, and the difference is recorded in provenance.
DISTRIBUTION_SHA256 = {
    "reut2-000.sgm": "4ad6fc02a23a692df8e64cbe7727ba33fe1266b2a8dc7a57ce27f7a867576a78",
    "reut2-001.sgm": "f8382d1cbfd17d18e253ba0185c20b7831ec5e28668db3b200b31661afc2519a",
    "reut2-002.sgm": "12f0047ec11b88bf7a756ed1eff44d6f7c785275ef812a108856cfa9cc0a24dc",
    "reut2-003.sgm": "ee5a668b5a89ebd76a1ab4bb39bb50d965bd37dd28a34dcf0861c8da4c3bac7f",
    "reut2-004.sgm": "9ccffaa64dc2782c2bb55c78364cb6b41540640862811b26e39aca96c790f51b",
    "reut2-005.sgm": "73773b533d830b0367194a1ea0ec7e7050a4b2d1ecd0b0b51877683a92c1c4cb",
    "reut2-006.sgm": "6a03ae7384361d7b89fff4d0f3b3ab2d030faa4203aac88db69db27e4f70b160",
    "reut2-007.sgm": "5490c901dc5ff94ed7b7fcdec30cca69299aefd0621714b09176393bbab947db",
    "reut2-008.sgm": "03c6ded7e6270e89d114f40e2bc4d66b05fbd20394517a747726a9d6406c2eb3",
    "reut2-009.sgm": "cc91017d2f95aca4694cf38aa55d5528d1e409eebce83f0f4533fe00ebd85666",
    "reut2-010.sgm": "c144c9e2b94af12776d35a4c25aa0f0ee59c252545bc5be1c5166e9dd24dccda",
    "reut2-011.sgm": "64a49568df509fe6ad8797d38c9d6c0a1f5057e1040871a22ae9dea5f4d232fa",
    "reut2-012.sgm": "3bf8eb6526c2f631923f6c100fe8edd5055544a833e1f63e3a3adb5af3a0d072",
    "reut2-013.sgm": "ff568f0c6e1f83266dcf85d02220afa37830671cc8eef56d992c9e9ed566a7be",
    "reut2-014.sgm": "d5340d183b2e49692de8e25c868c350b572ad5a650a98929f1600df161b2acb7",
    "reut2-015.sgm": "85e84f985f70bd82d74fb92a8b246d1bb66e693229f56170fddd47e709ae0ff3",
    "reut2-016.sgm": "cd94d6738573e83f5292db1151c76b0dac5793fcfa1fdf8709508f7f0b1ad142",
    "reut2-017.sgm": "98374032d27f67a5f8f3f46a3c2ba34d05dfb7f258d955b2fed220f895926260",
    "reut2-018.sgm": "f7be71118e9ba417e5fe5f61cddb826cde46eab59881100c968fce547028d4d6",
    "reut2-019.sgm": "e9f2886582ba811b020ec00bbe5478451488aa1d68bae02a0fb42f9f671f44bc",
    "reut2-020.sgm": "24a13281acd84e61bea5eb6438d659494be3bf9159362fd15f57ab2e7f653171",
    "reut2-021.sgm": "8ba46946e4d248e91b3851e5be5cdc3d9727cf5927be82022c27ef004068948e",
}

_SGM_NAME = re.compile(r"(?:^|/)(reut2-\d{3}\.sgm)$")
_DOC = re.compile(r"<REUTERS\b([^>]*)>(.*?)</REUTERS>", re.S)
_NEWID = re.compile(r'NEWID="(\d+)"')
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_TOPICS = re.compile(r"<TOPICS>(.*?)</TOPICS>", re.S)
_D = re.compile(r"<D>(.*?)</D>", re.S)
_TITLE = re.compile(r"<TITLE>(.*?)</TITLE>", re.S)
_BODY = re.compile(r"<BODY>(.*?)</BODY>", re.S)
_TEXT = re.compile(r"<TEXT[^>]*>(.*?)</TEXT>", re.S)
_TAG = re.compile(r"<[^>]+>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def sgml_text(raw: str) -> str:
    """Plain text of an SGML fragment: the end-of-text marker &#3; and tags removed, entities decoded.

    The files also mark paragraph starts with the two characters `&\\t`; they become a line break.
    """
    raw = raw.replace("&#3;", "").replace("&\\t", "\n")
    return _CONTROL.sub(" ", html.unescape(_TAG.sub(" ", raw))).strip()


def _read_files(path: str | None, cache_dir: str | None) -> tuple[list[tuple[str, bytes]], dict]:
    """The 22 .sgm files as (name, bytes) in name order, from a folder, an archive, or a download."""
    if path is None:
        archive = download_archive(cache_dir)
        files = _read_archive(archive)
        return files, {
            "kind": "download",
            "path": str(archive),
            "url": ARCHIVE_URL,
            "archive_sha256": sha256_file(archive),
        }
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data path {p} does not exist (expected a folder of reut2-*.sgm files or {ARCHIVE_NAME})")
    if p.is_dir():
        names = sorted(f for f in os.listdir(p) if _SGM_NAME.search(f))
        if not names:
            raise DataError(f"data folder {p} holds no reut2-*.sgm files")
        files = []
        for name in names:
            try:
                files.append((name, (p / name).read_bytes()))
            except OSError as e:
                raise DataError(f"cannot read {p / name}: {e.strerror}") from None
        return files, {"kind": "directory", "path": str(p.resolve())}
    return _read_archive(p), {"kind": "archive", "path": str(p.resolve()), "archive_sha256": sha256_file(p)}


def _read_archive(archive: Path) -> list[tuple[str, bytes]]:
    try:
        with tarfile.open(archive, "r:*") as tar:
            files = []
            for member in tar:
                m = _SGM_NAME.search(member.name)
                if m and member.isfile():
                    files.append((m.group(1), tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: not a readable tar archive of Reuters-21578 ({type(e).__name__}: {e})") from None
    if not files:
        raise DataError(f"{archive}: archive holds no reut2-*.sgm files")
    return sorted(files)


def _checksum_mismatches(files: list[tuple[str, bytes]]) -> list[str]:
    names = {n for n, _ in files}
    bad = [n for n, data in files if DISTRIBUTION_SHA256.get(n) != hashlib.sha256(data).hexdigest()]
    return bad + sorted(set(DISTRIBUTION_SHA256) - names)


def download_archive(cache_dir: str | None = None) -> Path:
    """Downloads the UCI archive into `cache_dir` (default ~/.cache/reuters-ray) once, verified.

    The archive is accepted only when its 22 SGML files match Distribution 1.0's SHA-256 sums; it is
    written under a temporary name and renamed, so a broken download never looks like a good one.
    """
    folder = Path(cache_dir or Path.home() / ".cache" / "reuters-ray").expanduser()
    target = folder / ARCHIVE_NAME
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=ARCHIVE_NAME + ".", suffix=".part", dir=folder)
    os.close(fd)
    try:
        try:
            urllib.request.urlretrieve(ARCHIVE_URL, tmp)
        except OSError as e:
            raise DataError(
                f"could not download {ARCHIVE_URL} ({e}); pass data.path (a folder of reut2-*.sgm or "
                f"{ARCHIVE_NAME}) or set $REUTERS21578_PATH"
            ) from None
        bad = _checksum_mismatches(_read_archive(Path(tmp)))
        if bad:
            raise DataError(f"downloaded {ARCHIVE_URL} does not match Reuters-21578 Distribution 1.0: {', '.join(bad)}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _parse(files: list[tuple[str, bytes]]) -> tuple[list[dict], list[tuple[int, int, str]]]:
    """All documents in walk order, and every <BODY> as (file index, offset, raw text) in walk order."""
    docs, bodies = [], []
    for fi, (name, data) in enumerate(files):
        text = data.decode("latin-1")  # the distribution's encoding; every byte decodes
        matches = list(_DOC.finditer(text))
        opened = len(re.findall(r"<REUTERS\b", text))
        tail = text[matches[-1].end() :] if matches else text
        if not matches or opened != len(matches) or "<" in tail:
            raise DataError(
                f"{name}: truncated or garbled SGML: {opened} <REUTERS> tags open, {len(matches)} complete "
                f"documents{' (text after the last </REUTERS>)' if matches and '<' in tail else ''}"
            )
        bodies.extend((fi, m.start(1), m.group(1)) for m in _BODY.finditer(text))
        for m in matches:
            newid = _NEWID.search(m.group(1))
            body = m.group(2)
            topics_m = _TOPICS.search(body)
            if newid is None or topics_m is None:
                raise DataError(f"{name}: garbled document at offset {m.start()}: no NEWID or no <TOPICS>")
            docs.append(
                {
                    "file": fi,
                    "id": newid.group(1),
                    "attrs": dict(_ATTR.findall(m.group(1))),
                    "topics": _D.findall(topics_m.group(1)),
                    "topics_end": m.start(2) + topics_m.end(),
                    "title": _TITLE.search(body),
                    "body": _BODY.search(body),
                    "text": _TEXT.search(body),
                }
            )
    return docs, bodies


def _own_text(doc: dict) -> str:
    parts = [sgml_text(doc[k].group(1)) for k in ("title", "body") if doc[k] is not None]
    if not parts and doc["text"] is not None:  # <TEXT TYPE="UNPROC">: no title/body markup at all
        parts = [sgml_text(doc["text"].group(1))]
    return "\n".join(p for p in parts if p)


def _text_source(doc: dict) -> str:
    """Where _own_text finds a wire's text: "title and body"; "title only" (a brief, <TEXT TYPE="BRIEF">, whose
    <TEXT> holds a title and the filler "Blah blah blah."); "body only"; "whole text" (<TEXT TYPE="UNPROC">, no
    <TITLE>/<BODY> markup); "none"."""
    if doc["title"] is not None:
        return "title and body" if doc["body"] is not None else "title only"
    if doc["body"] is not None:
        return "body only"
    return "whole text" if doc["text"] is not None else "none"


SPLITS = ("keras", "modapte")
TASKS = ("single", "multi")


def load_reuters21578(
    path: str | None,
    text: str = "title+body",
    cache_dir: str | None = None,
    seed: int = 113,
    split: str = "keras",
    task: str = "single",
) -> TextDataset:
    """Reuters-46 (split "keras") or the ModApte split (split "modapte") from the raw files (see the module
    docstring for the rules). task "multi" (ModApte only): multi-hot labels of every topic of a wire.

    path: a folder of reut2-*.sgm, or reuters21578.tar.gz; None downloads the archive into `cache_dir`.
    Raises DataError for a missing or empty folder, an unreadable archive, or a truncated .sgm file, and for a
    combination of text, split and task that does not exist.
    """
    if text not in ("title+body", "keras"):
        raise DataError(f"data.text must be 'title+body' or 'keras', got {text!r}")
    if split not in SPLITS:
        raise DataError(f"data.split must be 'keras' or 'modapte', got {split!r}")
    if task not in TASKS:
        raise DataError(f"data.task must be 'single' or 'multi', got {task!r}")
    if split == "modapte" and text == "keras":
        raise DataError(
            "data.text keras is Keras's reading of its own Reuters-46 wires (975 of them get a later wire's body); "
            "data.split modapte takes each wire's own text: use data.text title+body"
        )
    if split == "keras" and task == "multi":
        raise DataError(
            "data.task multi needs data.split modapte with source reuters21578 (Keras's split is built on one topic "
            "per wire)"
        )
    files, prov = _read_files(path, cache_dir)
    mismatched = _checksum_mismatches(files)
    docs, bodies = _parse(files)
    prov.update(
        {
            "source": "reuters21578",
            "text_mode": text,
            "files": len(files),
            "checksums": "match Reuters-21578 Distribution 1.0"
            if not mismatched
            else f"differ from Distribution 1.0: {', '.join(mismatched)}",
            "documents": len(docs),
        }
    )
    if split == "modapte":
        return _modapte(files, docs, prov, task)
    return _keras46(docs, bodies, prov, text, seed)


def all_wires(path: str | None, cache_dir: str | None = None) -> list[tuple[str, str]]:
    """(NEWID, own text: title and body, as data.text title+body reads it) of every wire of the distribution, in file
    order: with topics or without, of every split. A student's transfer texts (reuters_ray.recipes.distill) are drawn from
    the ones a run left out. Raises DataError as load_reuters21578 does."""
    files, _ = _read_files(path, cache_dir)
    docs, _ = _parse(files)
    return [(d["id"], _own_text(d)) for d in docs]


def _modapte(files: list[tuple[str, bytes]], docs: list[dict], prov: dict, task: str) -> TextDataset:
    """The ModApte split of the parsed wires (module docstring, split="modapte")."""
    for d in docs:
        if "TOPICS" not in d["attrs"] or "LEWISSPLIT" not in d["attrs"]:
            raise DataError(
                f"{files[d['file']][0]}: wire NEWID={d['id']} has no TOPICS or LEWISSPLIT attribute in its <REUTERS> "
                f"tag; the ModApte split is read from them"
            )
    topics_yes = [d for d in docs if d["attrs"]["TOPICS"] == "YES"]
    chosen = {
        side: [d for d in topics_yes if d["attrs"]["LEWISSPLIT"] == mark]
        for side, mark in (("train", "TRAIN"), ("test", "TEST"))
    }
    if not chosen["train"] or not chosen["test"]:
        raise DataError(
            f"the files hold {len(chosen['train'])} training and {len(chosen['test'])} test wires of the ModApte split "
            f'(TOPICS="YES" with LEWISSPLIT="TRAIN" / "TEST"); both are needed'
        )
    not_used = len(topics_yes) - len(chosen["train"]) - len(chosen["test"])  # LEWISSPLIT="NOT-USED"
    without = {side: sum(not d["topics"] for d in ds) for side, ds in chosen.items()}
    notes = _first_topic_notes(chosen, without) if task == "single" else []
    if task == "single":  # the first topic, as Keras's rule; a wire without topics has no label
        chosen = {side: [d for d in ds if d["topics"]] for side, ds in chosen.items()}
        names = sorted({d["topics"][0] for ds in chosen.values() for d in ds})
    else:
        names = sorted({t for ds in chosen.values() for d in ds for t in d["topics"]})
    index = {name: i for i, name in enumerate(names)}

    def labels(ds: list[dict]) -> np.ndarray:
        if task == "single":
            return np.array([index[d["topics"][0]] for d in ds], dtype=np.int64)
        hot = np.zeros((len(ds), len(names)), dtype=np.uint8)
        for row, d in enumerate(ds):
            hot[row, [index[t] for t in d["topics"]]] = 1  # a topic listed twice (NEWID 5467, 19918) counts once
        return hot

    prov.update(
        {
            "task": task,
            "label_order": "alphabetical",
            "modapte": {
                "rule": 'TOPICS="YES"; LEWISSPLIT="TRAIN" -> train, "TEST" -> test, "NOT-USED" left out',
                "topics_yes": len(topics_yes),
                "not_used": not_used,
                # wires without a topic: task single leaves them out here (no first topic); task multi keeps them as
                # rows of zeros, which preprocessing drops (no kept topic)
                "without_topics": without,
                "repeated_topics": [
                    {"id": d["id"], "topics": sorted({t for t in d["topics"] if d["topics"].count(t) > 1})}
                    for ds in chosen.values()
                    for d in ds
                    if len(set(d["topics"])) < len(d["topics"])
                ],
                "text_sources": {
                    side: dict(sorted(Counter(map(_text_source, ds)).items())) for side, ds in chosen.items()
                },
            },
            "split": {
                "name": "modapte",
                "seed": None,  # a fixed split: data.split_seed does not apply
                "seed_note": "data.split_seed does not apply: ModApte is fixed by the files' LEWISSPLIT attribute",
                "train": len(chosen["train"]),
                "test": len(chosen["test"]),
            },
            "notes": notes,
            "steps": [],
        }
    )
    if task == "multi":
        prov["topics_need_test_wire"] = True  # ModApte-90: preprocessing also drops topics without a test wire
    return TextDataset(
        train_texts=[_own_text(d) for d in chosen["train"]],
        train_labels=labels(chosen["train"]),
        test_texts=[_own_text(d) for d in chosen["test"]],
        test_labels=labels(chosen["test"]),
        label_names=names,
        train_ids=[d["id"] for d in chosen["train"]],
        test_ids=[d["id"] for d in chosen["test"]],
        provenance=prov,
    )


def _other_topics(wires: list[dict]) -> int:
    """How many of `wires` list a topic besides their first (a topic listed twice counts once)."""
    return sum(len(set(d["topics"])) > 1 for d in wires)


def _first_topic_notes(chosen: dict[str, list[dict]], without: dict[str, int]) -> list[str]:
    """ModApte, task single: what labelling each wire by its first topic does to the data, a line each."""
    lost = {side: _other_topics(ds) for side, ds in chosen.items()}
    return [
        f"data.task single labels each ModApte wire by its first topic: {lost['train']} training and {lost['test']} "
        f"test wires lose their other topics (--data.task multi keeps every topic)",
        f"ModApte: {without['train']} training and {without['test']} test wires without a topic are left out (no "
        f"label; --data.task multi drops them too)",
    ]


def _keras46(docs: list[dict], bodies: list[tuple[int, int, str]], prov: dict, text: str, seed: int) -> TextDataset:
    """Keras's Reuters-46 of the parsed wires (module docstring, rules 1-5)."""
    body_keys = [(fi, off) for fi, off, _ in bodies]

    with_topics = [d for d in docs if d["topics"]]
    counts = Counter(d["topics"][0] for d in with_topics)
    kept = [d for d in with_topics if counts[d["topics"][0]] >= MIN_TOPIC_DOCS]
    names: list[str] = []
    for d in kept:
        if d["topics"][0] not in names:
            names.append(d["topics"][0])
    index = {name: i for i, name in enumerate(names)}

    texts, foreign = [], 0
    for d in kept:
        if text == "keras":
            i = bisect.bisect_left(body_keys, (d["file"], d["topics_end"]))
            texts.append(sgml_text(bodies[i][2]) if i < len(bodies) else "")
            foreign += d["body"] is None
        else:
            texts.append(_own_text(d))
    labels = np.array([index[d["topics"][0]] for d in kept], dtype=np.int64)
    ids = [d["id"] for d in kept]

    order = np.arange(len(kept))
    np.random.RandomState(seed).shuffle(order)
    cut = int(len(kept) * (1 - TEST_SPLIT))
    tr, te = order[:cut], order[cut:]
    prov.update(
        {
            "documents_with_topics": len(with_topics),
            "topic_min_documents": MIN_TOPIC_DOCS,
            "kept_documents": len(kept),
            "without_own_body": sum(d["body"] is None for d in kept),
            "carrying_another_wires_body": foreign,
            "split": {"seed": seed, "test_split": TEST_SPLIT, "train": len(tr), "test": len(te)},
            # Keras's rules 2 and 3, what they do to the wires (keras_reuters.PUBLISHED holds the same for its npz)
            "other_topics": {
                "train": _other_topics([kept[i] for i in tr]),
                "test": _other_topics([kept[i] for i in te]),
            },
            "left_out_rare_first_topic": len(with_topics) - len(kept),
            "steps": [],
        }
    )
    other = prov["other_topics"]
    counts = f"{other['train']} training and {other['test']} test wires list other topics too"
    prov["notes"] = [keras_rule_note(counts, prov["left_out_rare_first_topic"], "--data.split modapte")]
    return TextDataset(
        train_texts=[texts[i] for i in tr],
        train_labels=labels[tr],
        test_texts=[texts[i] for i in te],
        test_labels=labels[te],
        label_names=names,
        train_ids=[ids[i] for i in tr],
        test_ids=[ids[i] for i in te],
        provenance=prov,
    )
