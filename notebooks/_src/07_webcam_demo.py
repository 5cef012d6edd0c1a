from nbbuild import build, code, exercise, md, report, setup

NB = "07_webcam_demo"
cells = [
    md(r"""
# 07 · Classify a photo from your webcam with a quantized network

**What you will learn**

* how a real photo is turned into what a Fashion-MNIST network was trained on
  (grayscale, dark background, object centred and filling a 28x28 frame), and how
  the paper's ImageNet pipeline (shorter side to 256, centre crop, mean pixel) differs;
* how to run a quantized network (Q-CNN, look-up tables) on a single image with the
  numpy engine, and compare its answer and time with the dense network;
* how a JupyterLab widget gets camera frames: an [anywidget](https://anywidget.dev)
  ES module that sends each captured JPEG to Python as a binary buffer.

**What it needs**

* JupyterLab 4 with `ipywidgets` 8, `anywidget` and Pillow (`pip install 'qcnn-lite[notebooks]'`);
* a trained `data/models/mini-alexnet.qcnn` (`python -m qcnn_lite train --arch mini-alexnet`);
  the quantized version is made from it on first use and cached in `results/cache/models/`.
  Without it the app still runs, on an untrained network, and says so;
* a camera is optional: the browser only offers it on a secure page (`https://`,
  `http://localhost`, `http://127.0.0.1`) and after you allow it. The file upload always works;
* Fashion-MNIST (`make data`) for the non-interactive check below.

Apart from the one-off quantization, nothing here is slow; `QCNN_FAST=1` shortens the
accuracy check and the timing loop.
"""),
    setup(NB, "import io\nfrom pathlib import Path\nfrom PIL import Image\nfrom qcnn_lite.io import datasets\nfrom qcnn_lite import kernels\nfrom qcnn_lite.io.preprocess import fashion_image, load_image, prepare\nfrom qcnn_lite.apps.demo import classify, full_size_speedup, load_models\nfrom qcnn_lite.io.paths import project_root", one_blas_thread=True),
    code(r"""
PHOTO = project_root() / "data" / "samples" / "coffee.jpg"
print("kernel backend:", kernels.backend())
"""),
    md(r"""
## The networks

`load_models()` returns the quantized mini-AlexNet and the dense network it came from. The
quantized one is `data/models/mini-alexnet-q.qcnn` when it was made from the dense file beside
it; otherwise the dense `data/models/mini-alexnet.qcnn` is quantized here, once (under a minute on a free core)
and cached in `results/cache/models/`. The recipe is the paper's AlexNet setting 2 scaled to the
mini network (`qcnn_lite.paper.constants.MINI_SETTINGS`: conv C's = 4, K = 128; fc C's = 4, K = 32;
fc8 C's = 1, K = 8) with error correction; the cell below prints the calibration the file
records, to compare with the suite's recipe (notebook 04: 2,500 images, 2 sweeps). Both networks
run through the same numpy engine, `Network.forward`.
"""),
    code(r"""
qnet, dense, notes = load_models()
for n in notes:
    print("note:", n)
print(f"Q-CNN : {qnet.name}, quantized={qnet.is_quantized}, settings={qnet.meta.get('quantization', {}).get('settings')}")
print(f"dense : {dense.name if dense is not None else None}, weights: {dense.meta.get('weights') if dense is not None else '-'}")
print("classes:", qnet.meta.get("classes"))
qinfo = qnet.meta.get("quantization", {})
print(f"calibration recorded in the file: n_calib={qinfo.get('n_calib')}, n_iter={qinfo.get('n_iter')}"
      " (the recipe of notebook 04: n_calib=2500, n_iter=2)")
"""),
    report(r"""
The model file {claim(qinfo.get('n_calib') == 2500 and qinfo.get('n_iter') == 2, "was quantized with notebook 04's recipe", "was **not** quantized with notebook 04's recipe: re-make it with `python -m qcnn_lite classify --quantize data/models/mini-alexnet.qcnn --force`")}
({qinfo.get('n_calib')} calibration images, {qinfo.get('n_iter')} sweeps per layer).
"""),
    md(r"""
## From a photo to a 28x28 Fashion-MNIST picture

Fashion-MNIST pictures are product photos (Zalando's catalogue) that were trimmed to the
object, scaled so that its longer side fills 28 pixels, turned to grey and **inverted**:
a light object on a black background. A webcam photo is the opposite: a dark-ish object
somewhere in a light, busy room. `qcnn_lite.io.preprocess.fashion_image` closes the gap:

1. decode, apply the EXIF orientation (phones store pictures sideways), grayscale;
2. look at a band around the border: if it is light (median > 0.5), invert the picture,
   so the background becomes dark;
3. subtract the background level (the border's median) and scale the brightest pixel to 1;
4. crop to the bounding box of the pixels above 10 % of the brightest, pad it square
   around its centre, and resize to 28x28: the object fills the frame, as in training;
5. normalise with the mean and std stored in the model (`Network.meta`), exactly as in
   training (`qcnn_lite.io.datasets.to_input`).

ImageNet-size networks (3x224x224 or 3x227x227) take the paper's Caffe pipeline instead
(`qcnn_lite.io.datasets.imagenet_preprocess`): shorter side to 256, centre crop, BGR order, mean
pixel subtracted.

Every bad file — empty, not an image, truncated, larger than 64 megapixels (a
*decompression bomb* is refused from its header, before decoding) — raises
`ImageError` with a message the app shows instead of a traceback. RGBA, palette,
16-bit, CMYK and grayscale files are converted.
"""),
    code(r"""
im = load_image(PHOTO)
gray = np.asarray(im.convert("L"), np.float32) / 255
pic = fashion_image(im)
test_x, test_y = datasets.load_fashion_mnist("test")

fig, ax = plt.subplots(1, 4, figsize=(12, 3))
ax[0].imshow(im); ax[0].set_title(f"photo {im.size[0]}x{im.size[1]}")
border = np.concatenate([gray[:12].ravel(), gray[-12:].ravel(), gray[:, :18].ravel(), gray[:, -18:].ravel()])
light = np.median(border) > 0.5
ax[1].imshow(gray, cmap="gray", vmin=0, vmax=1); ax[1].set_title(f"grey; border median {np.median(border):.2f}")
ax[2].imshow(pic, cmap="gray", vmin=0, vmax=1)
ax[2].set_title(("inverted, " if light else "not inverted, ") + "cropped, 28x28")
ax[3].imshow(test_x[0], cmap="gray"); ax[3].set_title(f"a Fashion-MNIST image ({datasets.CLASSES[test_y[0]]})")
for a in ax:
    a.axis("off")
fig.tight_layout()
show(fig, "preprocessing")
"""),
    md(r"""
## The app

Run the cell below in JupyterLab. Allow the camera when the browser asks, hold an
object in front of a plain wall (Fashion-MNIST knows ten kinds of clothes, shoes and
bags), and press **Capture**. Or upload a photo. You see the 28x28 picture the network
receives, its top-5 classes, and the time of the Q-CNN and of the dense network.

If the page is not a secure context, there is no camera, or you refuse permission,
the widget says so and you use the upload.
"""),
    code(r"""
from qcnn_lite.apps.webcam_ui import classify_app

app = classify_app()
app
"""),
    md(r"""
## The same code path, without a camera

The app calls `qcnn_lite.apps.demo.classify(net, file_bytes, dense)` for every frame and
upload. Here it classifies a few Fashion-MNIST test images, first as the 28x28 PNG files
they are, then "photographed": upscaled to 224x224, inverted to a white background and
pasted off-centre on a larger page, saved as JPEG. The pre-processing has to undo all of
that. Last comes the real photo of a cup of coffee, which is not one of the ten classes.
"""),
    code(r"""
def png_bytes(a):
    buf = io.BytesIO(); Image.fromarray(a).save(buf, format="PNG"); return buf.getvalue()

def as_photo(a, seed):
    rng = np.random.default_rng(seed)
    big = Image.fromarray(255 - a).resize((224, 224), Image.Resampling.BICUBIC)
    page = Image.new("L", (480, 360), 255)
    page.paste(big, (int(rng.integers(0, 256)), int(rng.integers(0, 136))))
    buf = io.BytesIO(); page.convert("RGB").save(buf, format="JPEG", quality=90); return buf.getvalue()

rows = []
for i in range(6):
    truth = datasets.CLASSES[test_y[i]]
    for kind, blob in (("28x28 PNG", png_bytes(test_x[i])), ("as a photo", as_photo(test_x[i], i))):
        r = classify(qnet, blob, dense)
        rows.append((f"test #{i}", kind, truth, r.top[0], r.dense_top[0] if r.dense_top else None))
r = classify(qnet, PHOTO.read_bytes(), dense)
rows.append(("coffee.jpg", "real photo", "(not a class)", r.top[0], r.dense_top[0] if r.dense_top else None))

print(f"{'image':<11}{'input':<12}{'truth':<15}{'Q-CNN top-1':<24}{'dense top-1'}")
for name, kind, truth, q, d in rows:
    dtxt = f"{d[0]} ({d[1]:.2f})" if d else "-"
    print(f"{name:<11}{kind:<12}{truth:<15}{q[0] + f' ({q[1]:.2f})':<24}{dtxt}")
agree = sum(q[0] == d[0] for *_, q, d in rows if d)
print(f"Q-CNN and dense agree on {agree} of {len(rows)} inputs")
"""),
    md(r"""
How much does the pre-processing cost in accuracy? The same test images, three ways: fed
directly as the network was trained (`to_input`), through the app's pipeline as 28x28 PNG
files, and through it "photographed" as above.
"""),
    code(r"""
n = 60 if FAST else 500

def accuracy(blobs):
    pred = [int(qnet.forward(prepare(b, qnet.input_shape, qnet.meta).x).argmax()) for b in blobs]
    return 100 * float(np.mean(np.array(pred) == test_y[:n]))

direct = qnet.predict(datasets.to_input(test_x[:n], *datasets.normalisation(qnet.meta))).argmax(1)
print(f"Q-CNN top-1 on {n} Fashion-MNIST test images:")
print(f"  fed directly          {100 * float(np.mean(direct == test_y[:n])):5.1f} %")
print(f"  28x28 PNG, pipeline   {accuracy(png_bytes(test_x[i]) for i in range(n)):5.1f} %")
print(f"  'photographed'        {accuracy(as_photo(test_x[i], i) for i in range(n)):5.1f} %")
"""),
    md(r"""
## How long one photo takes

One image at a time is the app's case (the paper's phone demo too): the time is the
forward pass only, the pre-processing is not included. Both run on one BLAS thread (set in the
first cell), so the comparison is fair and steadier on a busy machine; single-image timings
still vary from run to run: the benchmarks (`python -m qcnn_lite bench`) are the reference.
"""),
    code(r"""
import time

x = prepare(PHOTO.read_bytes(), qnet.input_shape, qnet.meta).x
reps = 5 if FAST else 30

def median_ms(net):
    net.forward(x)  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); net.forward(x); ts.append(time.perf_counter() - t0)
    return 1000 * float(np.median(ts))

tq = median_ms(qnet)
print(f"Q-CNN ({kernels.backend()} kernels): {tq:.2f} ms per image (median of {reps})")
if dense is not None:
    td = median_ms(dense)
    print(f"dense CNN                : {td:.2f} ms per image; ratio dense/Q-CNN = {td / tq:.2f}")
full = full_size_speedup("alexnet")  # from results/table2, with the machine that measured it
print("full-size AlexNet, results/table2:", full)
"""),
    report(r"""
Here, at 28x28, the dense network takes {td / tq:.2f} times the Q-CNN's time (median of {reps} warm runs each).
{f"At full AlexNet size the results table (measured on {full['cpu']}, {full['date']}) has Q-CNN {full['speedup']:.2f}x faster than the same dense engine: " + claim(full['speedup'] > td / tq, 'the look-up tables pay off on large layers; a 28x28 network is mostly per-layer overhead, which no algorithm removes.', 'at full size the gain is no larger than here.') if full else "Without `results/table2` (run `make reproduce`) there is no full-size figure to compare with."}
The app shows the same two lines: each time there is the median of several warm runs, never a single cold one.
"""),
    md(r"""
## Photos unlike the training images

A closed-set classifier always answers with one of its ten classes, even for a photo with nothing in it. The app
adds a note (`qcnn_lite.apps.demo.far_from_training`) when the network's input is nearly uniform, or when the
top class has less than `MIN_TOP1` probability. The thresholds, against the test set:
"""),
    code(r"""
from qcnn_lite.apps import demo as demo_app

buf = io.BytesIO(); Image.new("RGB", (320, 240), (128, 128, 128)).save(buf, format="JPEG")
grey = classify(qnet, buf.getvalue(), dense)
coffee = classify(qnet, PHOTO.read_bytes(), dense)
test_std = test_x[:2000].reshape(2000, -1).std(1)
test_p = qnet.predict(datasets.to_input(test_x[:2000], *datasets.normalisation(qnet.meta))).max(1)
print(f"uniform grey photo: Q-CNN says {grey.top[0][0]} ({grey.top[0][1]:.2f}); note: {grey.far_notes}")
print(f"coffee.jpg        : Q-CNN says {coffee.top[0][0]} ({coffee.top[0][1]:.2f}); note: {coffee.far_notes}")
print(f"test images: least grey-level std {test_std.min():.1f} (UNIFORM_STD = {demo_app.UNIFORM_STD}); "
      f"{100 * float((test_p < demo_app.MIN_TOP1).mean()):.1f} % have top-1 probability under MIN_TOP1 = {demo_app.MIN_TOP1}")
"""),
    report(r"""
The uniform grey photo gets "{grey.top[0][0]}" at {grey.top[0][1]:.2f}, and the app
{claim(bool(grey.far_notes), 'says that the photo is nearly uniform, nothing like the training images')}; no test
image is that flat ({claim(test_std.min() > demo_app.UNIFORM_STD, f'the least varied has a grey-level spread of {test_std.min():.1f}, above the threshold')}).
The coffee cup gets "{coffee.top[0][0]}" at {coffee.top[0][1]:.2f}: {claim(not coffee.far_notes, 'no note, because a softmax can be confident about anything; the notes catch only the obvious cases', 'a note')}.
"""),
    code(r"""
coffee_label, coffee_p = r.top[0]
"""),
    report(r"""
## Summary

* A real photo becomes a Fashion-MNIST input by grayscale, inversion when the
  background is light, background subtraction, bounding-box crop, square padding and a
  28x28 resize, then the training normalisation stored in the model.
* The quantized network answers a single image through look-up tables with the same
  numpy engine as the dense one; the app shows both answers and times side by side.
* The camera widget is a small anywidget ES module: it needs a secure context and
  permission, and always leaves the file upload as a fallback.
* A closed-set classifier always picks one of its classes: the coffee cup is called
  "{coffee_label}" with probability {coffee_p:.2f}, an answer that means nothing whatever its probability.

## Exercises
"""),
    exercise(1, r"""
Photograph a T-shirt or a shoe on a plain light wall, then on a busy background.
Which step of the pre-processing fails on the busy one?
""", r"""
Look at the 28x28 picture `fashion_image` returns: is the background dark and the object filling the frame?
""", r"""
The border median no longer measures the background, so the inversion and the background subtraction go wrong,
and the bounding box takes in the clutter: the object no longer fills the frame as in training. The cell pastes
test images on a plain and on a busy (random texture) page and compares what the pipeline makes of each with
the original 28x28 image.
""", check=r"""
def on_page(a, busy, seed):
    r_ = np.random.default_rng(seed)
    page = r_.integers(120, 256, (360, 480)).astype(np.uint8) if busy else np.full((360, 480), 255, np.uint8)
    big = np.asarray(Image.fromarray(255 - a).resize((224, 224), Image.Resampling.BICUBIC))
    y0, x0 = int(r_.integers(0, 136)), int(r_.integers(0, 256))
    page[y0:y0 + 224, x0:x0 + 224] = np.minimum(page[y0:y0 + 224, x0:x0 + 224], big)
    return Image.fromarray(page)

corr = {True: [], False: []}
for i in range(20):
    for busy in (False, True):
        got = fashion_image(on_page(test_x[i], busy, i))
        corr[busy].append(np.corrcoef(got.ravel(), test_x[i].ravel() / 255.0)[0, 1])
print(f"correlation with the original 28x28 image: plain page {np.mean(corr[False]):.2f}, busy page {np.mean(corr[True]):.2f}")
assert np.mean(corr[True]) < np.mean(corr[False])
"""),
    exercise(2, r"""
Change `threshold` in `fashion_image` (default 0.1) to 0.3 and 0.02: how do the crops change, and does the
accuracy of the table follow?
""", r"""
The threshold decides which pixels count as object for the bounding box.
""", r"""
On a clean background it hardly matters: the pixels outside the object are near zero after the background
subtraction, so all three thresholds find nearly the same box (the cell measures the share of the frame the
object covers, and the accuracy on "photographed" test images). The threshold matters on a noisy or uneven
background: a low one keeps faint background in the box (the object shrinks in the frame), a high one crops to
the brightest part only (dark parts of the object are cut).
""", check=r"""
m_ex = 30 if FAST else 200
fill, acc_t = {}, {}
for thr in (0.02, 0.1, 0.3):
    pics = [fashion_image(Image.open(io.BytesIO(as_photo(test_x[i], i))), threshold=thr) for i in range(m_ex)]
    fill[thr] = float(np.mean([(p > 0.1).mean() for p in pics]))  # share of the frame the object covers
    xs_ = datasets.to_input((np.stack(pics) * 255).astype(np.uint8), *datasets.normalisation(qnet.meta))
    acc_t[thr] = 100 * float((qnet.predict(xs_).argmax(1) == test_y[:m_ex]).mean())
    print(f"threshold {thr}: object covers {100 * fill[thr]:.0f} % of the frame; top-1 {acc_t[thr]:.1f} % on {m_ex} photos")
assert max(fill.values()) - min(fill.values()) < 0.05  # clean photos: nearly the same crop at every threshold
"""),
    exercise(3, r"""
Quantize with fewer codewords (`K = 16` for the fc layers, see `qcnn_lite.apps.demo.quantize_for_demo`) and compare
the top-5 probabilities with the dense network's on the same photos.
""", r"""
`quantize_for_demo(dense, ...)` takes the settings from `demo_settings`; pass your own dict to
`qcnn_lite.quantize_network` instead.
""", r"""
With error correction the top-1 answers rarely change at $K = 16$: the cell quantizes with fc $K = 16$
(notebook 04's recipe in full mode, 1,000 images and one sweep in fast mode) and counts the test images on which its
top-1 differs from the demo model's.
""", check=r"""
from qcnn_lite import quantize_network
from qcnn_lite.apps.demo import demo_settings
st16 = {**demo_settings(dense), "fc": (4, 16)}
train_x, _ = datasets.load_fashion_mnist("train")
n_cal, n_it = (1000, 1) if FAST else (2500, 2)
cal = datasets.to_input(train_x[np.random.default_rng(0).choice(len(train_x), n_cal, replace=False)], *datasets.normalisation(dense.meta))
q16 = quantize_network(dense, cal, st16, n_iter=n_it, seed=0, show_progress=False)
X_ex = datasets.to_input(test_x[:1000], *datasets.normalisation(dense.meta))
same = float((q16.predict(X_ex).argmax(1) == qnet.predict(X_ex).argmax(1)).mean())
print(f"fc K=16 against the demo model (fc K=32): same top-1 on {100 * same:.1f} % of 1000 test images")
assert same > 0.95
"""),
    exercise(4, r"""
Add a "none of these" answer: reject a photo when the top-1 probability is below a threshold you choose from the
Fashion-MNIST test set. What does the coffee cup get?
""", r"""
Take the distribution of top-1 probabilities on the test set and choose the threshold that keeps, say, 95 % of the
correct answers.
""", r"""
A softmax probability is not a confidence measure for inputs unlike the training set: the threshold rejects some
unknown inputs but not all. Here it rejects the uniform grey photo but not the coffee cup, which the network calls
a class with high probability.
""", check=r"""
probs_ex = qnet.predict(datasets.to_input(test_x[:2000], *datasets.normalisation(qnet.meta)))
right_ex = probs_ex.argmax(1) == test_y[:2000]
thr_ex = float(np.percentile(probs_ex.max(1)[right_ex], 5))  # keeps 95 % of the correct answers
rejected = {"grey": grey.top[0][1] < thr_ex, "coffee": coffee.top[0][1] < thr_ex}
print(f"threshold {thr_ex:.2f}: rejected {rejected}")
assert rejected["grey"] and not rejected["coffee"]
"""),
]

if __name__ == "__main__":
    build(NB, cells, constants={"128": "the released conv K", "32": "the released fc K", "227": "AlexNet input side",
                                  "224": "ImageNet input side", "256": "the paper's resize side",
                                  "64": "the decompression-bomb limit, megapixels", "16": "16-bit images; K = 16",
                                  "2,500": "the calibration recipe of notebook 04", "0.3": "exercise 2 threshold",
                                  "0.02": "exercise 2 threshold", "0.1": "fashion_image's default threshold",
                                  "95": "exercise 4: share of correct answers kept"})
