// The landmark app as a static page: photos in, the most likely landmarks out, computed in this browser.
//
// ONNX Runtime Web (its wasm build) runs an exported model (src/onnx_export.py: the network, the calibrated softmax,
// the "unknown" score and the class activation map); recipe.js makes its input crop. models.json (src/web.py writes
// it) lists the models with their files' metadata_props, which ONNX Runtime Web does not expose. Photos are never sent anywhere; only the maps' background
// tiles come from OpenStreetMap, and the maps work without them.
//
// Test hooks: <body data-ready="true"> once the chosen model is loaded and the handlers are attached; one
// [data-testid=result-card] per photo with data-top1 (its answer) and data-model, or data-error (one line naming the
// file); window.landmark holds the functions the tests and bench/web_latency.py call.

import * as ort from "./ort/ort.wasm.min.mjs";
import { camToPicture, cropBox, cropGeometry, preprocess, pyRound } from "./recipe.js";

const L = window.L; // Leaflet, loaded by index.html before this module
const TOP_K = 5;
const THUMBNAIL_SIZE = 256; // CSS px, the photo's longest side in its card (src/app_card.py's)
const MAX_PIXELS = 90_000_000; // larger photos are refused, as src/images.py does: 4 bytes a pixel once decoded
const COUNTRIES_WITH_THE = new Set(["United States", "United Kingdom", "Czech Republic", "Netherlands", "Philippines"]);
const BAR_COLOURS = { known: "#3b7dd8", unknown: "#b4bac4" };
const MAP_COLOURS = { known: "#3b7dd8", unknown: "#9099a8" };
const MAP_MARGIN = 40; // px kept free around the landmarks (src/app_map.py's view)
const MAP_MAX_ZOOM = 6; // a single landmark is shown with its region, not its street
// Where the model looked, cold to hot (src/app_card.py's colours), and the colour's opacity from least to most.
const HEAT_COLOURS = [[48, 18, 59], [70, 130, 250], [40, 220, 140], [250, 200, 40], [220, 30, 20]];
const HEAT_OPACITY = [0.15, 0.65];

// ---------------------------------------------------------------------------------------------------------------------
// Python's number formatting

/** Python's f"{x:.{digits}f}": toFixed, except that an exact tie goes to the even digit, as Python's does. */
function pyFixed(x, digits) {
  const exact = x.toFixed(100); // every digit of the double (toFixed is exact) above 1e-14; smaller ones are no tie
  const end = exact.indexOf(".") + 1 + digits;
  if (!/^50*$/.test(exact.slice(end))) return x.toFixed(digits);
  const kept = exact.slice(0, digits ? end : end - 1);
  return Number(kept.at(-1)) % 2 === 0 ? kept : x.toFixed(digits); // toFixed breaks a tie upwards
}

// ---------------------------------------------------------------------------------------------------------------------
// Photos

class PhotoError extends Error {} // a photo that cannot be used: one line that starts with its name

/** A File -> {name, width, height, pixels: RGBA bytes, canvas}: upright (EXIF orientation applied), transparency
 * flattened onto white (drawn over white: the same arithmetic as PIL's alpha_composite onto white), colours as
 * stored (no colour-profile conversion, as PIL). Throws a PhotoError. */
async function decode(file) {
  if (file.size === 0) throw new PhotoError(`${file.name}: the file is empty`);
  let bitmap;
  try {
    bitmap = await createImageBitmap(file,
      { imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none" });
  } catch {
    throw new PhotoError(`${file.name}: not an image this browser can read (JPEG, PNG, WebP, GIF, BMP, AVIF)`);
  }
  try {
    const { width, height } = bitmap;
    if (width * height > MAX_PIXELS) {
      throw new PhotoError(`${file.name}: too large to open safely (${width}x${height} is ` +
        `${Math.round(width * height / 1e6)} megapixels, over the ${MAX_PIXELS / 1e6}-megapixel limit)`);
    }
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.fillStyle = "#fff";
    context.fillRect(0, 0, width, height);
    context.drawImage(bitmap, 0, 0);
    return { name: file.name, width, height, canvas, pixels: context.getImageData(0, 0, width, height).data };
  } finally {
    bitmap.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Models

const models = new Map(); // label -> Promise of {label, file, session, classes, imageSize, ...}

/** models.json's metadata_props (strings, as src/onnx_export.py writes them) -> what the page uses. */
function settings(entry) {
  const meta = entry.metadata;
  return {
    label: entry.label, file: entry.file, classes: JSON.parse(meta.classes),
    imageSize: Number(meta.image_size), resizeSize: Number(meta.resize_size), maxAspect: Number(meta.max_aspect),
    threshold: meta.threshold === "-inf" ? -Infinity : Number(meta.threshold),
  }; // has_cam: the file's "cam" output says it
}

/** Load a model and run it once on a blank crop, so that the first photo does not wait for ONNX Runtime's
 * first-run allocations. */
async function loadModel(entry) {
  const model = settings(entry);
  model.session = await ort.InferenceSession.create(entry.file,
    { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const size = model.imageSize;
  await model.session.run({ crop: new ort.Tensor("float32", new Float32Array(3 * size * size), [1, 3, size, size]) });
  return model;
}

function model(entry) {
  if (!models.has(entry.label)) {
    const loading = loadModel(entry);
    loading.catch(() => models.delete(entry.label)); // tried again next time: the file may be fixed
    models.set(entry.label, loading);
  }
  return models.get(entry.label);
}

/** What src.runtime.answer gives for a photo's crop (preprocess's): {predictions: the TOP_K likeliest classes, most
 * likely first; countries: [[country, probability summed over its landmarks]], most likely first; known; cam}. */
async function answer(model, crop) {
  const size = model.imageSize;
  const found = await model.session.run({ crop: new ort.Tensor("float32", crop, [1, 3, size, size]) });
  const probabilities = found.probabilities.data;
  if (!Array.from(probabilities).every(Number.isFinite)) throw new Error("NaN probabilities");
  const order = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a]);
  const predictions = order.slice(0, TOP_K)
    .map((index) => ({ ...model.classes[index], probability: probabilities[index] }));
  const countries = new Map();
  model.classes.forEach((row, index) => {
    if (row.country) countries.set(row.country, (countries.get(row.country) ?? 0) + probabilities[index]);
  });
  const cam = found.cam ? { data: found.cam.data, high: found.cam.dims[1], wide: found.cam.dims[2] } : null;
  return {
    predictions, countries: [...countries].sort((a, b) => b[1] - a[1]),
    known: found.scores.data[0] >= model.threshold, cam,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Words (src/landmarks.py, src/runtime.py)

function inCountry(country) {
  return country.split(" / ").map((part) => (COUNTRIES_WITH_THE.has(part) ? `the ${part}` : part)).join(" or ");
}

function countryLine(countries) {
  if (!countries.length) return "";
  const [country, probability] = countries[0];
  return `Most likely in ${inCountry(country)} (${pyFixed(100 * probability, 0)}%)`;
}

const noneOfThese = (count) => `This does not look like any of the ${count} landmarks`;

// ---------------------------------------------------------------------------------------------------------------------
// The card

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children.filter((child) => child !== null && child !== ""));
  return node;
}

function chart(predictions, known) {
  const rows = predictions.map((p, rank) => {
    const percent = 100 * p.probability;
    return element("div", { class: "prediction", "data-probability": String(p.probability) },
      element("div", { class: "label" }, element("span", { class: "rank" }, String(rank + 1)), p.name,
        p.place ? element("span", { class: "place" }, p.place) : null),
      element("div", { class: "bar" }, element("div", {
        style: `width:${pyFixed(percent, 1)}%;background:${known ? BAR_COLOURS.known : BAR_COLOURS.unknown}`,
      })),
      element("div", { class: "probability" }, `${pyFixed(percent, 1)}%`));
  });
  return element("div", { class: known ? "chart" : "chart unknown" },
    element("b", {}, known ? "Most likely landmarks" : "Its closest guesses"), ...rows);
}

/** Longitudes moved by 360 degrees so that they span the smallest arc (src.app_map.unwrapped): Hawaii and Sydney are
 * 53 degrees apart across the Pacific. */
function unwrapped(longitudes) {
  if (longitudes.length < 2) return longitudes;
  const ordered = [...longitudes].sort((a, b) => a - b);
  let widest = -1, westEnd = 0;
  for (let i = 1; i < ordered.length; i++) {
    if (ordered[i] - ordered[i - 1] > widest) [widest, westEnd] = [ordered[i] - ordered[i - 1], ordered[i - 1]];
  }
  if (widest <= ordered[0] + 360 - ordered.at(-1)) return longitudes;
  const moved = longitudes.map((longitude) => (longitude <= westEnd ? longitude + 360 : longitude));
  const back = (Math.min(...moved) + Math.max(...moved)) / 2 > 180 ? 360 : 0;
  return moved.map((longitude) => longitude - back);
}

/** A Leaflet map with a circle per located prediction (area by probability, numbered by rank, the most likely on
 * top), zoomed to fit them (src/app_map.py). Offline the circles are drawn on a grey background. */
function landmarkMap(container, predictions, known) {
  const located = predictions.map((p, i) => [i + 1, p]).filter(([, p]) => p.latitude !== null);
  if (!located.length) return null;
  const longitudes = unwrapped(located.map(([, p]) => p.longitude));
  const places = located.map(([, p], i) => [p.latitude, longitudes[i]]);
  const world = L.map(container, { minZoom: 0, scrollWheelZoom: false });
  L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
    minZoom: 0, maxZoom: 19,
    attribution: '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
  }).addTo(world);
  world.fitBounds(places, { padding: [MAP_MARGIN, MAP_MARGIN], maxZoom: MAP_MAX_ZOOM, animate: false });
  const colour = known ? MAP_COLOURS.known : MAP_COLOURS.unknown;
  located.map(([rank, p], i) => [rank, p, places[i]]).reverse().forEach(([rank, p, place]) => {
    const radius = Math.round(4 + 18 * Math.sqrt(Math.min(Math.max(p.probability, 0), 1)));
    const name = `${rank}. ${p.name}: ${pyFixed(100 * p.probability, 1)}%`;
    L.circleMarker(place, { radius, color: colour, fillColor: colour, fillOpacity: 0.45, weight: 2 })
      .bindTooltip(name).addTo(world);
    L.marker(place, {
      icon: L.divIcon({ className: "map-rank", html: String(rank), iconSize: [2 * radius, 2 * radius] }),
      title: name, keyboard: false, zIndexOffset: 1000 * (predictions.length - rank),
    }).addTo(world);
  });
  return world;
}

const heatColours = Array.from({ length: 256 }, (_, level) => { // HEAT_COLOURS interpolated at 256 levels
  const at = (level / 255) * (HEAT_COLOURS.length - 1), low = Math.min(Math.floor(at), HEAT_COLOURS.length - 2);
  return HEAT_COLOURS[low].map((value, c) => value + (HEAT_COLOURS[low + 1][c] - value) * (at - low));
});

/** The picture's pixels with where the model looked blended in (src.app_card.heatmap_overlay): the class activation
 * map spread over the crop box of the photo (photo: its {height, width}), scaled to the picture; hot colours where
 * it is high. */
function overlaid(picture, photo, model, cam) {
  const { width, height } = picture;
  const plain = picture.getContext("2d").getImageData(0, 0, width, height);
  const [top, left, bottom, right] =
    cropBox(photo.height, photo.width, model.resizeSize, model.imageSize, model.maxAspect);
  const down = height / photo.height, across = width / photo.width;
  const heat = camToPicture(cam.data, cam.high, cam.wide, height, width,
    [top * down, left * across, bottom * down, right * across]);
  const [low, high] = HEAT_OPACITY;
  for (let i = 0; i < heat.length; i++) {
    const level = Math.round(Math.min(Math.max(heat[i] || 0, 0), 1) * 255);
    const opacity = low + ((high - low) * level) / 255, colour = heatColours[level];
    for (let c = 0; c < 3; c++) {
      plain.data[4 * i + c] = plain.data[4 * i + c] * (1 - opacity) + colour[c] * opacity;
    }
  }
  return plain;
}

/** The photo at most THUMBNAIL_SIZE CSS px on its longest side (as sharp as the screen and the photo allow). */
function thumbnail(photo) {
  const scale = Math.min(1, THUMBNAIL_SIZE / Math.max(photo.width, photo.height));
  const cssWidth = Math.max(1, Math.round(photo.width * scale));
  const cssHeight = Math.max(1, Math.round(photo.height * scale));
  const sharp = Math.min(window.devicePixelRatio || 1, 1 / scale); // pixels per CSS px, never more than the photo has
  const picture = element("canvas", { class: "photo", role: "img", "aria-label": photo.name,
    style: `width:${cssWidth}px;height:${cssHeight}px` });
  picture.width = Math.max(1, Math.round(cssWidth * sharp));
  picture.height = Math.max(1, Math.round(cssHeight * sharp));
  const context = picture.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(photo.canvas, 0, 0, picture.width, picture.height);
  return picture;
}

/** A toggle that shows where the model looked on the picture and back; one line when the model cannot say. */
function whereItLooked(picture, photo, model, result) {
  if (!result.cam) {
    return element("div", { class: "no-explain" },
      "Where the model looked: this model file cannot show it (exported without explain).");
  }
  const top = result.predictions[0].name, size = { height: photo.height, width: photo.width }; // not its pixels
  const toggle = element("button", { type: "button", class: "looked", "aria-pressed": "false",
    title: `Colours the photo by how much each part of it made the model answer ${top}: red most, blue least` },
  "Show where the model looked");
  const context = picture.getContext("2d");
  let plain = null, heat = null;
  toggle.addEventListener("click", () => {
    plain ??= context.getImageData(0, 0, picture.width, picture.height);
    heat ??= overlaid(picture, size, model, result.cam);
    const showing = toggle.getAttribute("aria-pressed") !== "true";
    context.putImageData(showing ? heat : plain, 0, 0);
    toggle.setAttribute("aria-pressed", String(showing));
    toggle.textContent = showing ? "Hide where the model looked" : "Show where the model looked";
  });
  return toggle;
}

/** A file's answer: {photo, result, times: [started, decoded, cropped, answered]}, or {error: one line}. */
async function answerFile(model, file) {
  const times = [performance.now()];
  try {
    const photo = await decode(file);
    times.push(performance.now());
    const crop = preprocess(photo, model.imageSize, model.resizeSize, model.maxAspect);
    times.push(performance.now());
    const result = await answer(model, crop);
    times.push(performance.now());
    return { photo, result, times };
  } catch (err) {
    return { error: err instanceof PhotoError ? `${err.message}. Please choose a photo (JPEG, PNG, ...).`
      : `${file.name}: could not classify this photo (${oneLine(err)}).` };
  }
}

/** One file's card, appended to `results` (the map needs its place in the page to size itself): the photo with
 * where the model looked, the answer in words, the map; or its one error line. Its data-ms: how long each part took. */
function showCard(results, model, file, { photo, result, times, error }, maps) {
  if (error) {
    const card = element("article", { class: "card failed", "data-testid": "result-card", "data-error": error }, error);
    results.append(card);
    return card;
  }
  const picture = thumbnail(photo);
  const words = element("div", { class: "words" },
    result.known ? null : element("div", { class: "verdict" }, `${noneOfThese(model.classes.length)}.`),
    chart(result.predictions, result.known),
    element("div", { class: result.known ? "country" : "country unknown" }, countryLine(result.countries)));
  const place = element("div", { class: "map" });
  const card = element("article", { class: "card", "data-testid": "result-card", "data-model": model.label,
    "data-top1": result.predictions[0].name },
  element("div", { class: "photo-column" }, element("b", { class: "name" }, file.name), picture,
    whereItLooked(picture, photo, model, result)), words, place);
  results.append(card);
  const world = landmarkMap(place, result.predictions, result.known);
  if (world) maps.push(world);
  else place.remove();
  times.push(performance.now());
  const ms = (from, to) => Math.round((times[to] - times[from]) * 10) / 10;
  card.dataset.ms = JSON.stringify({ decode: ms(0, 1), preprocess: ms(1, 2), model: ms(2, 3), card: ms(3, 4),
    total: ms(0, 4) });
  return card;
}

// ---------------------------------------------------------------------------------------------------------------------
// The page

const page = { manifest: null, files: [], shown: 0, maps: [] };
const $ = (id) => document.getElementById(id);

const oneLine = (err) => String(err?.message || err).split("\n")[0];

function status(text, kind = "info") {
  $("status").className = `status ${kind}`;
  $("status").textContent = text;
}

function chosen() {
  return page.manifest.models.find((entry) => entry.label === $("model").value);
}

/** Replace the cards with one per file, answered by the chosen model, one after the other; resolves to the cards. A
 * newer call stops this one. */
async function show(files) {
  const turn = ++page.shown;
  page.files = files;
  page.maps.splice(0).forEach((world) => world.remove());
  $("results").replaceChildren();
  if (!files.length) return [];
  const entry = chosen();
  let loaded;
  try {
    loaded = await model(entry);
  } catch (err) {
    status(`${entry.file}: cannot use this model (${oneLine(err)}).`, "error");
    return [];
  }
  const cards = [];
  for (const file of files) {
    const answered = await answerFile(loaded, file);
    if (turn !== page.shown) break; // a newer call replaced the cards meanwhile
    cards.push(showCard($("results"), loaded, file, answered, page.maps));
  }
  return cards;
}

async function useModel() {
  document.body.dataset.ready = "false";
  const entry = chosen();
  status(`Loading ${entry.label}…`);
  try {
    await model(entry);
  } catch (err) {
    if (chosen() === entry) status(`${entry.file}: cannot use this model (${oneLine(err)}).`, "error");
    return;
  }
  if (chosen() !== entry) return; // another model was chosen meanwhile: its own call finishes the job
  const threads = ort.env.wasm.numThreads;
  status(`${entry.label}: ${entry.file}, in this browser (ONNX Runtime Web, ${threads} ` +
    `thread${threads === 1 ? "" : "s"})`);
  if (page.files.length) await show(page.files);
  document.body.dataset.ready = "true";
}

async function start() {
  // ONNX Runtime Web's threads share memory, which needs a cross-origin isolated page (src/web.py's server sends the
  // headers; a plain static host gets one thread). Half the cores, at most 4 (ONNX Runtime's own default): on a
  // 2-core machine a photo took 151-233 ms (p50) with two threads and 87-110 ms with one (bench/web_latency.py): the
  // page and the browser need the other core.
  ort.env.wasm.numThreads = crossOriginIsolated ? Math.min(4, Math.ceil((navigator.hardwareConcurrency || 1) / 2)) : 1;
  try {
    const response = await fetch("models.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    page.manifest = await response.json();
  } catch (err) {
    status(`models.json: cannot read the list of models (${oneLine(err)}). Build the page with ` +
      "python -m src.web build.", "error");
    return;
  }
  for (const entry of page.manifest.models) $("model").append(element("option", { value: entry.label }, entry.label));
  $("photos").addEventListener("change", () => {
    const files = [...$("photos").files];
    $("photos").value = ""; // so that choosing the same photos again shows them again (after a drop, say)
    show(files);
  });
  $("model").addEventListener("change", useModel);
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    document.body.classList.remove("dragging");
    if (event.dataTransfer.files.length) show([...event.dataTransfer.files]);
  });
  await useModel();
}

window.landmark = {
  pyRound, pyFixed, cropGeometry, cropBox, preprocess, camToPicture, countryLine, decode, show,
  get threads() { return ort.env.wasm.numThreads; },
};
start();
