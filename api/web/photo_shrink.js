// Large photos are shrunk in the browser before they are sent: a 48 MP phone photo (8064x6048)
// becomes 3072x2304, a quick upload on a phone connection and far under the server's size limit.
// The browser turns it upright by its EXIF orientation while decoding, and the JPEG it writes
// carries no EXIF (no GPS position). A photo the browser cannot decode (HEIC outside Safari) is
// sent as it is: the server decodes it.
"use strict";

const PhotoShrink = (() => {
  const MAX_SIDE = 3072; // px: far more than the face needs, well inside the server's decode bound
  const REENCODE_ABOVE_BYTES = 8 * 1024 * 1024; // a smaller but heavy file (a big PNG) is re-encoded too

  async function forUpload(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch {
      return file;
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    if (scale === 1 && file.size <= REENCODE_ABOVE_BYTES) {
      bitmap.close();
      return file;
    }
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    const context = canvas.getContext("2d");
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
    if (!blob) return file;
    const name = (file.name || "photo").replace(/\.[^.]*$/, "") + ".jpg";
    return new File([blob], name, { type: "image/jpeg" });
  }

  return { forUpload, MAX_SIDE };
})();
