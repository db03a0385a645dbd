// The crop recipe around the exported ONNX graph (src/crop.py and src/onnx_runtime.py), ported exactly: Python's
// round-half-to-even, PIL's BILINEAR resampling in float, and the class activation map's way back onto the photo.
// tests/test_web.py checks every function here against Python's, to the last bit for the crop.

// ---------------------------------------------------------------------------------------------------------------------
// Python's arithmetic

/** Python's round(): halves to even (round(58.5) == 58, Math.round(58.5) == 59). */
export function pyRound(x) {
  const rounded = Math.round(x);
  return rounded - x === 0.5 && rounded % 2 !== 0 ? rounded - 1 : rounded;
}

// ---------------------------------------------------------------------------------------------------------------------
// The crop recipe (src/crop.py)

function cut(length, longest) {
  return length > longest ? [Math.floor((length - longest) / 2), longest] : [0, length];
}

/** src.crop.crop_geometry: [cutTop, cutLeft, cutHeight, cutWidth, resizedHeight, resizedWidth, cropTop, cropLeft]. */
export function cropGeometry(height, width, resizeSize, imageSize, maxAspect) {
  const longest = maxAspect * Math.min(height, width);
  const [cutTop, cutHeight] = cut(height, longest);
  const [cutLeft, cutWidth] = cut(width, longest);
  const scale = resizeSize / Math.min(cutHeight, cutWidth);
  const resizedHeight = Math.max(pyRound(cutHeight * scale), imageSize);
  const resizedWidth = Math.max(pyRound(cutWidth * scale), imageSize);
  return [cutTop, cutLeft, cutHeight, cutWidth, resizedHeight, resizedWidth,
    pyRound((resizedHeight - imageSize) / 2), pyRound((resizedWidth - imageSize) / 2)];
}

/** src.crop.crop_box: [top, left, bottom, right] of the part of the photo the model sees, in photo pixels. */
export function cropBox(height, width, resizeSize, imageSize, maxAspect) {
  const [cutTop, cutLeft, cutHeight, cutWidth, resizedHeight, resizedWidth, top, left] =
    cropGeometry(height, width, resizeSize, imageSize, maxAspect);
  const rowStep = cutHeight / resizedHeight, columnStep = cutWidth / resizedWidth;
  return [cutTop + top * rowStep, cutLeft + left * columnStep,
    cutTop + (top + imageSize) * rowStep, cutLeft + (left + imageSize) * columnStep];
}

/** Pillow's BILINEAR weights (Resample.c, precompute_coeffs) of output pixels first .. first + count - 1 of an
 * inSize -> outSize resize, with the same double arithmetic: a triangle whose support grows with the downscale. */
function resampleWeights(inSize, outSize, first, count) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // the triangle's own support is 1
  const inverse = 1 / filterScale;
  const size = Math.ceil(support) * 2 + 1;
  const starts = new Int32Array(count), taps = new Int32Array(count), weights = new Float64Array(count * size);
  for (let i = 0; i < count; i++) {
    const center = (first + i + 0.5) * scale;
    const start = Math.max(Math.trunc(center - support + 0.5), 0);
    const end = Math.min(Math.trunc(center + support + 0.5), inSize);
    let total = 0;
    for (let x = start; x < end; x++) {
      const w = Math.max(1 - Math.abs((x - center + 0.5) * inverse), 0);
      weights[i * size + x - start] = w;
      total += w;
    }
    for (let x = 0; total !== 0 && x < end - start; x++) weights[i * size + x] /= total;
    starts[i] = start;
    taps[i] = end - start;
  }
  return { starts, taps, weights, size };
}

/** src.onnx_runtime.preprocess: a decoded photo ({pixels: RGBA bytes, width, height}) -> its central crop, float32
 * [3 * imageSize * imageSize] in [0, 1]. Cut to at most maxAspect:1, resize the shorter side to resizeSize with PIL's
 * BILINEAR filter in float (horizontal pass, then vertical; float32 in between, as Pillow stores it), central crop,
 * / 255. Only the crop's pixels are resampled: a 4032x3024 photo costs what its central crop needs. */
export function preprocess(photo, imageSize, resizeSize, maxAspect) {
  const { pixels, width, height } = photo;
  const [cutTop, cutLeft, cutHeight, cutWidth, resizedHeight, resizedWidth, top, left] =
    cropGeometry(height, width, resizeSize, imageSize, maxAspect);
  const columns = resampleWeights(cutWidth, resizedWidth, left, imageSize);
  const rows = resampleWeights(cutHeight, resizedHeight, top, imageSize);
  const firstRow = rows.starts[0], rowCount = rows.starts[imageSize - 1] + rows.taps[imageSize - 1] - firstRow;
  const across = new Float32Array(rowCount * imageSize * 3); // [row][column][RGB]: the horizontal pass
  for (let r = 0; r < rowCount; r++) {
    const rowStart = ((cutTop + firstRow + r) * width + cutLeft) * 4;
    for (let j = 0; j < imageSize; j++) {
      const at = rowStart + columns.starts[j] * 4, k = j * columns.size;
      let red = 0, green = 0, blue = 0;
      for (let t = 0; t < columns.taps[j]; t++) {
        const w = columns.weights[k + t], p = at + 4 * t;
        red += pixels[p] * w;
        green += pixels[p + 1] * w;
        blue += pixels[p + 2] * w;
      }
      const o = (r * imageSize + j) * 3;
      across[o] = red;
      across[o + 1] = green;
      across[o + 2] = blue;
    }
  }
  const plane = imageSize * imageSize, crop = new Float32Array(3 * plane);
  for (let i = 0; i < imageSize; i++) {
    const k = i * rows.size, base = rows.starts[i] - firstRow;
    for (let j = 0; j < imageSize; j++) {
      let red = 0, green = 0, blue = 0;
      for (let t = 0; t < rows.taps[i]; t++) {
        const w = rows.weights[k + t], p = ((base + t) * imageSize + j) * 3;
        red += across[p] * w;
        green += across[p + 1] * w;
        blue += across[p + 2] * w;
      }
      const o = i * imageSize + j; // float32 after the pass, then float32 / 255, as NumPy divides
      crop[o] = Math.fround(red) / 255;
      crop[o + plane] = Math.fround(green) / 255;
      crop[o + 2 * plane] = Math.fround(blue) / 255;
    }
  }
  return crop;
}

/** src.onnx_runtime._interpolation_weights: [pixels * cells], the bilinear weights (align_corners=False, an edge
 * cell's value holding out to the edge) of each pixel on `cells` cells tiling [start, end); 0 outside it. */
function interpolationWeights(pixels, start, end, cells) {
  const weights = new Float32Array(pixels * cells);
  for (let i = 0; i < pixels; i++) {
    const centre = i + 0.5;
    if (centre < start || centre >= end) continue;
    const position = Math.min(Math.max((centre - start) * (cells / (end - start)) - 0.5, 0), cells - 1);
    for (let c = 0; c < cells; c++) weights[i * cells + c] = Math.max(1 - Math.abs(position - c), 0);
  }
  return weights;
}

/** src.onnx_runtime.cam_to_photo, onto a height x width picture whose crop box is box ([top, left, bottom, right]
 * in its pixels): float32 [height * width], the map [cells.height x cells.width] spread over the box, 0 outside. */
export function camToPicture(cam, cellsHigh, cellsWide, height, width, box) {
  const rows = interpolationWeights(height, box[0], box[2], cellsHigh);
  const columns = interpolationWeights(width, box[1], box[3], cellsWide);
  const across = new Float32Array(cellsHigh * width); // cam @ columns^T
  for (let c = 0; c < cellsHigh; c++) {
    for (let x = 0; x < width; x++) {
      let sum = 0;
      for (let d = 0; d < cellsWide; d++) sum += cam[c * cellsWide + d] * columns[x * cellsWide + d];
      across[c * width + x] = sum;
    }
  }
  const heat = new Float32Array(height * width);
  for (let y = 0; y < height; y++) {
    for (let c = 0; c < cellsHigh; c++) {
      const w = rows[y * cellsHigh + c];
      if (w === 0) continue;
      for (let x = 0; x < width; x++) heat[y * width + x] += w * across[c * width + x];
    }
  }
  return heat;
}
