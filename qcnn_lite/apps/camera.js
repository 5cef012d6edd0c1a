// Camera widget for qcnn_lite.widgets.CameraWidget (an anywidget ES module).
//
// Shows the live camera and, on "Capture", sends one JPEG frame to Python as a
// binary buffer of a custom message ({type: "frame"}), not as base64 text.
// The model's `status` trait tells Python whether the camera works:
// "starting", "live", or "unavailable: <reason>".

const REASONS = {
  NotAllowedError: "camera permission was refused",
  SecurityError: "camera access is blocked on this page",
  NotFoundError: "no camera was found",
  OverconstrainedError: "no camera was found that fits",
  NotReadableError: "the camera is in use by another program",
  AbortError: "the camera could not be started",
};

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text) e.textContent = text;
  return e;
}

function setStatus(model, node, status, message) {
  node.textContent = message;
  node.dataset.state = status.split(":")[0];
  model.set("status", status);
  model.save_changes();
}

function render({ model, el: host }) {
  const root = el("div", "qcnn-camera");
  const video = el("video", "qcnn-camera-video");
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  video.width = model.get("width");
  const button = el("button", "qcnn-camera-capture", "Capture");
  button.type = "button";
  button.disabled = true;
  const status = el("div", "qcnn-camera-status", "starting the camera…");
  root.append(video, button, status);
  host.appendChild(root);

  let stream = null;
  let stopped = false;

  const unavailable = (why) => {
    video.style.display = "none";
    button.style.display = "none";
    setStatus(model, status, `unavailable: ${why}`, `Camera unavailable: ${why}. Use the file upload instead.`);
  };

  // Not awaited: a pending permission prompt must not hold up the view.
  const start = async () => {
    if (!window.isSecureContext) {
      unavailable("the page is not a secure context (the camera needs https or localhost)");
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      unavailable("this browser has no camera API");
      return;
    }
    setStatus(model, status, "starting", "starting the camera…");
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
      if (stopped) {
        stream.getTracks().forEach((t) => t.stop());
        return;
      }
      video.srcObject = stream;
      await video.play().catch(() => {});
      button.disabled = false;
      setStatus(model, status, "live", "Camera live: press Capture.");
    } catch (err) {
      unavailable(REASONS[err && err.name] || `the camera failed (${(err && err.message) || err})`);
    }
  };
  start();

  button.addEventListener("click", () => {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) {
      status.textContent = "No frame yet: wait for the picture, then press Capture.";
      return;
    }
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").drawImage(video, 0, 0, w, h);
    canvas.toBlob(async (blob) => {
      if (!blob) {
        status.textContent = "Could not encode the frame.";
        return;
      }
      const buffer = await blob.arrayBuffer();
      model.send({ type: "frame", width: w, height: h, mime: "image/jpeg" }, undefined, [buffer]);
      status.textContent = `Sent a ${w}x${h} frame (${Math.round(buffer.byteLength / 1024)} KiB).`;
    }, "image/jpeg", 0.92);
  });

  return () => {
    stopped = true;
    if (stream) stream.getTracks().forEach((t) => t.stop());
  };
}

export default { render };
