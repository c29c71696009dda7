"""README figure: one photo before and after an edit with the bundled model, and the 64 px crops.

Usage: python scripts/readme_figure.py OUT.png PHOTO [EDIT ...]
(docs/img/before_after.png: `dhr example astronaut.png`, then
 `python scripts/readme_figure.py docs/img/before_after.png astronaut.png age=+2 gender=-1`)
Nothing is retouched: the panels are the pipeline's outputs with its default settings.
"""
from __future__ import annotations

import sys

from PIL import Image, ImageDraw

from dhr.editing import parse_edit_spec
from dhr.io.image import load_image
from dhr.pipeline import Pipeline

out, photo_path, *specs = sys.argv[1:]
edits = dict(parse_edit_spec(s) for s in (specs or ["age=+2"]))
pipe = Pipeline.from_pretrained("faces-64", device="cpu")
photo = load_image(photo_path)
inv = pipe.invert(photo)[0]
res = pipe.edit(inv, edits)
H = 300
before = Image.fromarray(photo.pixels)
before = before.resize((round(before.width * H / before.height), H), Image.LANCZOS)
after = res.pasted.convert("RGB").resize(before.size, Image.LANCZOS)
S = 96  # 64 px crops shown at 1.5x, nearest neighbour: the model's real resolution stays visible
crops = [inv.aligned_image.convert("RGB").resize((64, 64), Image.LANCZOS), inv.image, res.crop]
labels = ["photo", "edited (" + ", ".join(f"{k} {v:+g}" for k, v in edits.items()) + "), pasted back",
          "aligned 64 px", "inversion", "edit"]
pad, top = 8, 16
W = 2 * before.width + 3 * pad
canvas = Image.new("RGB", (W, top + H + pad + top + S + pad), "white")
d = ImageDraw.Draw(canvas)
canvas.paste(before, (pad, top))
canvas.paste(after, (2 * pad + before.width, top))
d.text((pad, 2), labels[0], fill="black")
d.text((2 * pad + before.width, 2), labels[1], fill="black")
y = top + H + pad + top
for i, c in enumerate(crops):
    x = pad + i * (S + pad)
    canvas.paste(c.resize((S, S), Image.NEAREST), (x, y))
    d.text((x, y - top + 2), labels[2 + i], fill="black")
canvas.save(out)
print(f"wrote {out}: {canvas.width}x{canvas.height}")
