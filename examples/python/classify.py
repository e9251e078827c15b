"""Classify images with an edgeresnext bundle: python classify.py build/cpu/bundle shoe.png [more.png ...]"""

import sys

from edgeresnext.runtime import load_bundle

clf = load_bundle(sys.argv[1])  # checks manifest.json and the sha256 of every file
for path in sys.argv[2:]:
    result = clf.predict(path, top_k=5)  # labels and softmax scores, best first
    print(path, "  ".join(f"{label} {score:.3f}" for label, score in zip(result.labels, result.scores, strict=True)))
