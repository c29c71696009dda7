"""Model-card figure: real photos -> DHR inversion and edits with a bundled model's default settings.

Usage: python scripts/photo_figure.py OUT.png PHOTO [PHOTO ...]
(docs/img/photos.png: the example astronaut, then img12, img2 and img20 of ../shared/datasets/photos)
"""
import sys, numpy as np, torch
from PIL import Image, ImageDraw
torch.set_num_threads(1)
from dhr.pipeline import Pipeline
pipe = Pipeline.from_pretrained("faces-64", device="cpu")
rows = []
heads = ["aligned input", "DHR mask", "DHR inversion", "age +2", "age -2", "gender -1"]
for photo in sys.argv[2:]:
    inv = pipe.invert(photo)[0]
    cols = [np.asarray(inv.aligned_image.convert("RGB").resize((64, 64), Image.LANCZOS)),
            np.asarray(inv.mask_image.convert("RGB")), inv.to_numpy()]
    for e in ({"age": 2.0}, {"age": -2.0}, {"gender": -1.0}):
        cols.append(np.asarray(pipe.edit(inv, e).crop))
    rows.append(np.concatenate(cols, 1))
grid = np.concatenate(rows, 0)
img = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST)
canvas = Image.new("RGB", (img.width, img.height + 14), "white")
canvas.paste(img, (0, 14))
d = ImageDraw.Draw(canvas)
for i, h in enumerate(heads):
    d.text((i * 128 + 4, 1), h, fill="black")
canvas.save(sys.argv[1])
