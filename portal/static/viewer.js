/* The built-in viewer: reads a study's metadata (WADO-RS, PS3.18 10.4.1.1.2) from the DICOMweb
   root named by the page (data-dicomweb-root, data-study), fetches frames uncompressed in Explicit
   VR Little Endian (PS3.18 10.4.1.1.6; the server decodes compressed syntaxes), and applies the
   Modality LUT, the VOI window and MONOCHROME1 inversion in the browser (PS3.3 C.11), so
   windowing needs no round trip. Plain JavaScript, no build step. */
(() => {
  'use strict';

  const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
  const FRAME_ACCEPT = `multipart/related; type="application/octet-stream"; transfer-syntax=${EXPLICIT_VR_LITTLE_ENDIAN}`;
  const PREFETCH_CONCURRENCY = 4;
  const PAGE_STEP = 10;
  const ZOOM_STEP = 1.25;
  const TAG = {
    patientName: '00100010', patientId: '00100020', birthDate: '00100030', sex: '00100040',
    studyUid: '0020000D', studyDate: '00080020', studyTime: '00080030', studyDescription: '00081030',
    accession: '00080050', referring: '00080090',
    seriesUid: '0020000E', seriesNumber: '00200011', seriesDescription: '0008103E', modality: '00080060',
    bodyPart: '00180015',
    sopUid: '00080018', sopClass: '00080016', instanceNumber: '00200013', numberOfFrames: '00280008',
    samples: '00280002', photometric: '00280004', planar: '00280006', rows: '00280010', columns: '00280011',
    bitsAllocated: '00280100', bitsStored: '00280101', pixelRepresentation: '00280103',
    windowCenter: '00281050', windowWidth: '00281051', intercept: '00281052', slope: '00281053',
    sliceThickness: '00180050', sliceLocation: '00201041', pixelSpacing: '00280030',
  };
  // What the attributes panel shows, by information entity (PS3.3 A.1.2).
  const PANEL = [
    ['Patient', [['Name', 'patientName'], ['Patient ID', 'patientId'], ['Birth date', 'birthDate'], ['Sex', 'sex']]],
    ['Study', [['Date', 'studyDate'], ['Time', 'studyTime'], ['Description', 'studyDescription'],
      ['Accession number', 'accession'], ['Referring physician', 'referring'], ['Study Instance UID', 'studyUid']]],
    ['Series', [['Modality', 'modality'], ['Number', 'seriesNumber'], ['Description', 'seriesDescription'],
      ['Body part', 'bodyPart'], ['Series Instance UID', 'seriesUid']]],
    ['Instance', [['Number', 'instanceNumber'], ['SOP Instance UID', 'sopUid'], ['SOP Class UID', 'sopClass'],
      ['Rows × columns', null], ['Frames', 'numberOfFrames'], ['Photometric interpretation', 'photometric'],
      ['Bits allocated / stored', null], ['Rescale slope / intercept', null], ['Window centre / width', null],
      ['Slice location', 'sliceLocation'], ['Slice thickness', 'sliceThickness'], ['Pixel spacing', 'pixelSpacing']]],
  ];

  // -- DICOM JSON (PS3.18 F.2) ---------------------------------------------------------------

  function values(item, key) {
    const element = item[TAG[key]];
    return element && Array.isArray(element.Value) ? element.Value : [];
  }

  function first(item, key, fallback) {
    const found = values(item, key);
    return found.length ? found[0] : fallback;
  }

  function numeric(item, key, fallback) {
    const value = Number(first(item, key, NaN));
    return Number.isFinite(value) ? value : fallback;
  }

  function shown(value) {
    if (value && typeof value === 'object') {  // PS3.18 F.2.2: a person name's component groups
      return value.Alphabetic || value.Ideographic || value.Phonetic || '';
    }
    return value === undefined || value === null ? '' : String(value);
  }

  function textOf(item, key) {
    return values(item, key).map(shown).join(' \\ ');
  }

  // -- pixel data --------------------------------------------------------------------------------

  const ASCII = (text) => Uint8Array.from(text, (character) => character.charCodeAt(0));

  function lastIndexOf(bytes, pattern, before) {
    for (let at = Math.min(before, bytes.length - pattern.length); at >= 0; at -= 1) {
      let match = true;
      for (let k = 0; k < pattern.length; k += 1) {
        if (bytes[at + k] !== pattern[k]) { match = false; break; }
      }
      if (match) return at;
    }
    return -1;
  }

  function indexOf(bytes, pattern, from) {
    for (let at = from; at <= bytes.length - pattern.length; at += 1) {
      let match = true;
      for (let k = 0; k < pattern.length; k += 1) {
        if (bytes[at + k] !== pattern[k]) { match = false; break; }
      }
      if (match) return at;
    }
    return -1;
  }

  // The body of the one part of a multipart/related answer (RFC 2046 5.1.1): after the first
  // part's header block, up to the CRLF before the closing delimiter, searched from the end so
  // that a frame's bytes are never scanned.
  function onlyPart(buffer, contentType) {
    const found = /boundary="?([^";]+)"?/i.exec(contentType || '');
    if (!found) throw new Error('the frame answer is not multipart/related');
    const bytes = new Uint8Array(buffer);
    const delimiter = ASCII(`--${found[1]}`);
    const opening = indexOf(bytes, delimiter, 0);
    const headers = opening < 0 ? -1 : indexOf(bytes, ASCII('\r\n\r\n'), opening);
    const closing = lastIndexOf(bytes, ASCII(`\r\n--${found[1]}--`), bytes.length);
    if (headers < 0 || closing < headers) throw new Error('the multipart answer has no complete part');
    return buffer.slice(headers + 4, closing);  // a copy: aligned for 16- and 32-bit views
  }

  // Stored values (PS3.5 8.1.1, PS3.3 C.7.6.3.1): little endian, sign-extended from Bits Stored.
  function storedValues(buffer, image) {
    const count = image.rows * image.columns * image.samples;
    const signed = image.pixelRepresentation === 1;
    let view;
    if (image.bitsAllocated === 8) view = signed ? new Int8Array(buffer, 0, count) : new Uint8Array(buffer, 0, count);
    else if (image.bitsAllocated === 16) view = signed ? new Int16Array(buffer, 0, count) : new Uint16Array(buffer, 0, count);
    else if (image.bitsAllocated === 32) view = signed ? new Int32Array(buffer, 0, count) : new Uint32Array(buffer, 0, count);
    else throw new Error(`${image.bitsAllocated}-bit pixel data is not shown by this viewer`);
    if (image.bitsStored >= image.bitsAllocated || image.samples !== 1) return view;
    const unused = 32 - image.bitsStored;
    const mask = (2 ** image.bitsStored) - 1;
    const out = new Int32Array(count);
    for (let i = 0; i < count; i += 1) {
      const bits = view[i] & mask;
      out[i] = signed ? (bits << unused) >> unused : bits;
    }
    return out;
  }

  function decodeFrame(buffer, image) {
    const stored = storedValues(buffer, image);
    if (image.samples === 3) return { colour: colourPixels(stored, image) };
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < stored.length; i += 1) {
      const v = stored[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    return { stored, min, max };
  }

  // Colour frames as RGBA: Planar Configuration 0 (R1G1B1 R2G2B2…) or 1 (all R, all G, all B),
  // PS3.3 C.7.6.3.1.3; YBR_FULL converted to RGB by PS3.3 C.7.6.3.1.2.
  function colourPixels(stored, image) {
    const pixels = image.rows * image.columns;
    const rgba = new Uint8ClampedArray(pixels * 4);
    const planar = image.planar === 1;
    const scale = image.bitsAllocated > 8 ? 255 / ((2 ** image.bitsStored) - 1) : 1;
    const ybr = image.photometric === 'YBR_FULL';
    for (let i = 0; i < pixels; i += 1) {
      let a = stored[planar ? i : i * 3] * scale;
      let b = stored[planar ? pixels + i : i * 3 + 1] * scale;
      let c = stored[planar ? 2 * pixels + i : i * 3 + 2] * scale;
      if (ybr) {
        const y = a; const cb = b - 128; const cr = c - 128;
        a = y + 1.402 * cr;
        b = y - 0.344136 * cb - 0.714136 * cr;
        c = y + 1.772 * cb;
      }
      rgba[i * 4] = a; rgba[i * 4 + 1] = b; rgba[i * 4 + 2] = c; rgba[i * 4 + 3] = 255;
    }
    return rgba;
  }

  // PS3.3 C.11.2.1.2.1: the linear VOI function, to 0..255.
  function windowed(x, center, width) {
    const low = center - 0.5 - (width - 1) / 2;
    const high = center - 0.5 + (width - 1) / 2;
    if (x <= low) return 0;
    if (x > high) return 255;
    return ((x - (center - 0.5)) / (width - 1) + 0.5) * 255;
  }

  function greyPixels(frame, image, window) {
    const { stored, min, max } = frame;
    const invert = image.photometric === 'MONOCHROME1';
    const grey = (v) => {
      const level = Math.round(windowed(v * image.slope + image.intercept, window.center, window.width));
      return invert ? 255 - level : level;
    };
    const rgba = new Uint8ClampedArray(stored.length * 4);
    const packed = new Uint32Array(rgba.buffer);  // RGBA as one little-endian word per pixel
    const span = max - min + 1;
    if (span <= 1 << 20) {  // one window evaluation per stored value, not per pixel
      const table = new Uint32Array(span);
      for (let v = 0; v < span; v += 1) {
        const g = grey(min + v);
        table[v] = (0xff000000 | (g << 16) | (g << 8) | g) >>> 0;
      }
      for (let i = 0; i < stored.length; i += 1) packed[i] = table[stored[i] - min];
    } else {
      for (let i = 0; i < stored.length; i += 1) {
        const g = grey(stored[i]);
        packed[i] = (0xff000000 | (g << 16) | (g << 8) | g) >>> 0;
      }
    }
    return rgba;
  }

  // -- fetching with bounded concurrency -------------------------------------------------------

  class FrameLoader {
    constructor(fetchFrame, concurrency) {
      this.fetchFrame = fetchFrame;
      this.concurrency = concurrency;
      this.waiting = [];  // images not yet asked for, most wanted first
      this.pending = new Map();  // key → {promise, resolve}
      this.active = 0;
    }

    load(image, urgent) {
      let entry = this.pending.get(image.key);
      if (entry) {
        const at = this.waiting.indexOf(image);
        if (urgent && at > 0) { this.waiting.splice(at, 1); this.waiting.unshift(image); }
        return entry.promise;
      }
      entry = {};
      entry.promise = new Promise((resolve) => { entry.resolve = resolve; });
      this.pending.set(image.key, entry);
      if (urgent) this.waiting.unshift(image); else this.waiting.push(image);
      this.pump();
      return entry.promise;
    }

    // Frames not yet asked for are forgotten (another series was chosen); their promises end null.
    forget() {
      for (const image of this.waiting.splice(0)) {
        this.pending.get(image.key).resolve(null);
        this.pending.delete(image.key);
      }
    }

    pump() {
      while (this.active < this.concurrency && this.waiting.length) {
        const image = this.waiting.shift();
        const entry = this.pending.get(image.key);
        this.active += 1;
        this.fetchFrame(image)
          .then((result) => entry.resolve(result), (error) => entry.resolve({ error }))
          .finally(() => {
            this.pending.delete(image.key);
            this.active -= 1;
            this.pump();
          });
      }
    }
  }

  // -- the viewer --------------------------------------------------------------------------------

  class Viewer {
    constructor(root) {
      this.root = root;
      this.service = root.dataset.dicomwebRoot.replace(/\/+$/, '');
      this.study = root.dataset.study;
      const find = (selector) => root.querySelector(selector);
      this.ui = {
        status: find('.oix-status'), seriesList: find('.oix-series-list'), canvas: find('.oix-canvas'),
        box: find('.oix-canvas-box'), slider: find('.oix-slider'), counter: find('.oix-counter'),
        progress: find('.oix-progress'), frame: find('.oix-frame'), play: find('.oix-play'), fps: find('.oix-fps'),
        width: find('.oix-window-width'), center: find('.oix-window-center'), zoomLevel: find('.oix-zoom-level'),
        tags: find('.oix-tags-table'),
      };
      this.context = this.ui.canvas.getContext('2d');
      this.offscreen = document.createElement('canvas');
      this.series = [];
      this.current = null;  // the series shown
      this.index = 0;
      this.cache = new Map();  // image key → decoded frame, for the series shown
      this.window = null;  // {width, center}, kept while scrolling
      this.zoom = 1;
      this.pan = { x: 0, y: 0 };
      this.cine = null;
      this.firstDrawn = false;
      this.loader = new FrameLoader((image) => this.fetchFrame(image), PREFETCH_CONCURRENCY);
      this.bind();
    }

    say(message) { this.ui.status.textContent = message; }

    async start() {
      let response;
      try {
        response = await fetch(`${this.service}/studies/${encodeURIComponent(this.study)}/metadata`,
          { headers: { Accept: 'application/dicom+json' }, credentials: 'same-origin' });
      } catch (error) {
        this.say(`The study's metadata could not be fetched: ${error.message}`);
        return;
      }
      if (!response.ok) {
        this.say(`The study's metadata could not be read (HTTP ${response.status}).`);
        return;
      }
      this.series = groupSeries(await response.json());
      if (!this.series.length) {
        this.say('This study has no images this viewer can show.');
        return;
      }
      this.renderSeriesList();
      this.choose(0);
    }

    renderSeriesList() {
      this.ui.seriesList.replaceChildren(...this.series.map((series, position) => {
        const item = document.createElement('li');
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'oix-series-button';
        button.setAttribute('aria-pressed', 'false');
        const thumbnail = document.createElement('img');
        thumbnail.src = `${this.service}/studies/${encodeURIComponent(this.study)}/series/${encodeURIComponent(series.uid)}/thumbnail`;
        thumbnail.alt = `Thumbnail of series ${series.number ?? position + 1}`;
        thumbnail.width = 96;
        thumbnail.height = 96;
        thumbnail.loading = 'lazy';
        // Without a thumbnail the button still names the series by its label.
        thumbnail.addEventListener('error', () => thumbnail.classList.add('oix-thumbnail-failed'));
        const label = document.createElement('span');
        label.className = 'oix-series-label';
        label.textContent = [series.number !== undefined ? `Series ${series.number}` : `Series ${position + 1}`,
          series.modality, series.description].filter(Boolean).join(' · ');
        const count = document.createElement('span');
        count.className = 'oix-series-count';
        count.textContent = `${series.images.length} image${series.images.length === 1 ? '' : 's'}`;
        button.append(thumbnail, label, count);
        button.addEventListener('click', () => this.choose(position));
        item.append(button);
        return item;
      }));
    }

    choose(position) {
      if (position < 0 || position >= this.series.length) return;
      this.stopCine();
      this.loader.forget();
      this.cache = new Map();
      this.current = this.series[position];
      this.seriesPosition = position;
      this.allMarked = false;
      this.window = null;  // each series starts from its own first image's window
      this.zoom = 1;
      this.pan = { x: 0, y: 0 };
      this.ui.seriesList.querySelectorAll('.oix-series-button').forEach((button, at) => {
        button.setAttribute('aria-pressed', String(at === position));
      });
      const { images } = this.current;
      this.ui.slider.max = String(images.length);
      this.ui.slider.disabled = images.length < 2;
      this.ui.play.disabled = images.length < 2;
      this.say(`Series ${this.current.number ?? position + 1}: ${images.length} image(s). Loading…`);
      this.show(0);
      // Prefetch the whole series in order, PREFETCH_CONCURRENCY at a time.
      const series = this.current;
      images.forEach((image) => {
        this.loader.load(image, false).then((frame) => this.loaded(series, image, frame));
      });
    }

    loaded(series, image, frame) {
      if (series !== this.current || !frame) return;
      this.cache.set(image.key, frame);
      const done = series.images.filter((each) => this.cache.has(each.key)).length;
      this.ui.progress.textContent = done < series.images.length ? `${done} of ${series.images.length} loaded` : '';
      if (done === series.images.length && !this.allMarked) {
        this.allMarked = true;
        performance.mark('oix-all-images');
        this.say(`Series ${series.number ?? this.seriesPosition + 1}: all ${done} image(s) loaded.`);
      }
      if (series.images[this.index] === image) this.draw();
    }

    async fetchFrame(image) {
      const url = `${this.service}/studies/${encodeURIComponent(this.study)}/series/${encodeURIComponent(image.instance.seriesUid)}`
        + `/instances/${encodeURIComponent(image.instance.sopUid)}/frames/${image.frame}`;
      const response = await fetch(url, { headers: { Accept: FRAME_ACCEPT }, credentials: 'same-origin' });
      if (!response.ok) return { error: new Error(`HTTP ${response.status}`) };
      const body = onlyPart(await response.arrayBuffer(), response.headers.get('content-type'));
      return decodeFrame(body, image.instance);
    }

    show(index) {
      const { images } = this.current;
      const next = Math.max(0, Math.min(images.length - 1, index));
      this.index = next;
      const image = images[next];
      this.ui.slider.value = String(next + 1);
      this.ui.slider.setAttribute('aria-valuetext', `Image ${next + 1} of ${images.length}`);
      this.ui.counter.textContent = `Image ${next + 1} of ${images.length}`;
      this.ui.frame.textContent = `Frame ${image.frame} of ${image.instance.frames}`;
      this.root.dataset.imageIndex = String(next + 1);
      this.root.dataset.frame = String(image.frame);
      if (this.tagsOf !== image.instance) this.renderTags(image.instance);
      if (this.cache.has(image.key)) this.draw();
      else this.loader.load(image, true);
    }

    step(delta) { if (this.current) this.show(this.index + delta); }

    imageWindow(image, frame) {
      const center = numeric(image.meta, 'windowCenter', NaN);
      const width = numeric(image.meta, 'windowWidth', NaN);
      if (Number.isFinite(center) && Number.isFinite(width) && width >= 1) return { center, width };
      // No VOI in the object: the full range of its modality values.
      const low = frame.min * image.slope + image.intercept;
      const high = frame.max * image.slope + image.intercept;
      return { center: (low + high + 1) / 2, width: Math.max(1, Math.abs(high - low) + 1) };
    }

    setWindow(window) {
      this.window = { width: Math.max(1, Math.round(window.width)), center: Math.round(window.center) };
      this.ui.width.value = String(this.window.width);
      this.ui.center.value = String(this.window.center);
      this.root.dataset.window = `${this.window.width}/${this.window.center}`;
      this.draw();
    }

    resetWindow() {
      const image = this.current && this.current.images[this.index];
      const frame = image && this.cache.get(image.key);
      if (frame && frame.stored) this.setWindow(this.imageWindow(image.instance, frame));
    }

    draw() {
      if (this.drawPending) return;
      this.drawPending = true;
      requestAnimationFrame(() => { this.drawPending = false; this.paint(); });
    }

    paint() {
      if (!this.current) return;
      const image = this.current.images[this.index];
      const frame = this.cache.get(image.key);
      if (!frame) return;
      if (frame.error) {
        this.say(`Image ${this.index + 1} could not be loaded: ${frame.error.message}`);
        return;
      }
      const { instance } = image;
      if (frame.stored && !this.window) {
        this.setWindow(this.imageWindow(instance, frame));
        return;  // setWindow draws
      }
      const rgba = frame.colour || greyPixels(frame, instance, this.window);
      const { canvas } = this.ui;
      if (this.offscreen.width !== instance.columns || this.offscreen.height !== instance.rows) {
        this.offscreen.width = instance.columns;
        this.offscreen.height = instance.rows;
      }
      this.offscreen.getContext('2d').putImageData(new ImageData(rgba, instance.columns, instance.rows), 0, 0);
      // The canvas has the image's own resolution: at zoom 1 without pan a canvas pixel is an
      // image pixel; CSS scales it to fit.
      if (canvas.width !== instance.columns || canvas.height !== instance.rows) {
        canvas.width = instance.columns;
        canvas.height = instance.rows;
        this.fit();
      }
      const context = this.context;
      context.setTransform(1, 0, 0, 1, 0, 0);
      context.fillStyle = '#000';
      context.fillRect(0, 0, canvas.width, canvas.height);
      const cx = canvas.width / 2;
      const cy = canvas.height / 2;
      context.setTransform(this.zoom, 0, 0, this.zoom, cx + this.pan.x - cx * this.zoom, cy + this.pan.y - cy * this.zoom);
      context.imageSmoothingEnabled = this.zoom < 2;
      context.drawImage(this.offscreen, 0, 0);
      context.setTransform(1, 0, 0, 1, 0, 0);
      this.root.dataset.shown = image.key;
      this.ui.zoomLevel.textContent = `${Math.round(this.zoom * 100)}%`;
      if (!this.firstDrawn) {
        this.firstDrawn = true;
        performance.mark('oix-first-image');
      }
    }

    // CSS size of the canvas: the image's aspect ratio, as large as the box allows.
    fit() {
      const { canvas, box } = this.ui;
      const width = box.clientWidth || canvas.width;
      const height = Math.max(200, window.innerHeight * 0.7);
      const scale = Math.min(width / canvas.width, height / canvas.height);
      canvas.style.width = `${Math.floor(canvas.width * scale)}px`;
      canvas.style.height = `${Math.floor(canvas.height * scale)}px`;
    }

    zoomBy(factor) {
      this.zoom = Math.max(0.1, Math.min(20, this.zoom * factor));
      this.draw();
    }

    resetView() {
      this.zoom = 1;
      this.pan = { x: 0, y: 0 };
      this.draw();
    }

    panBy(dx, dy) {
      this.pan.x += dx;
      this.pan.y += dy;
      this.draw();
    }

    renderTags(instance) {
      const meta = instance.meta;
      const derived = {
        'Rows × columns': `${instance.rows} × ${instance.columns}`,
        'Bits allocated / stored': `${instance.bitsAllocated} / ${instance.bitsStored}`,
        'Rescale slope / intercept': `${instance.slope} / ${instance.intercept}`,
        'Window centre / width': [textOf(meta, 'windowCenter'), textOf(meta, 'windowWidth')].filter(Boolean).join(' / '),
      };
      const groups = PANEL.map(([heading, rows]) => {
        const body = document.createElement('tbody');
        const title = document.createElement('tr');
        const cell = document.createElement('th');
        cell.colSpan = 2;
        cell.scope = 'colgroup';
        cell.className = 'oix-tags-group';
        cell.textContent = heading;
        title.append(cell);
        body.append(title);
        rows.forEach(([name, key]) => {
          const value = key ? textOf(meta, key) : derived[name];
          if (!value) return;
          const row = document.createElement('tr');
          const label = document.createElement('th');
          label.scope = 'row';
          label.textContent = name;
          const data = document.createElement('td');
          data.textContent = value;
          row.append(label, data);
          body.append(row);
        });
        return body;
      });
      this.ui.tags.querySelectorAll('tbody').forEach((body) => body.remove());
      this.ui.tags.append(...groups);
      this.tagsOf = instance;
    }

    play() {
      if (this.cine || !this.current || this.current.images.length < 2) return;
      const tick = () => {
        const fps = Math.max(1, Math.min(60, Number(this.ui.fps.value) || 10));
        this.cine = setTimeout(tick, 1000 / fps);
        this.show((this.index + 1) % this.current.images.length);
      };
      this.cine = setTimeout(tick, 0);
      this.ui.play.textContent = 'Pause';
      this.ui.play.setAttribute('aria-pressed', 'true');
    }

    stopCine() {
      if (this.cine) clearTimeout(this.cine);
      this.cine = null;
      this.ui.play.textContent = 'Play';
      this.ui.play.setAttribute('aria-pressed', 'false');
    }

    bind() {
      const { canvas, slider, width, center, play } = this.ui;
      canvas.addEventListener('wheel', (event) => {
        event.preventDefault();
        if (event.ctrlKey) this.zoomBy(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP);
        else if (event.deltaY) this.step(event.deltaY > 0 ? 1 : -1);
      }, { passive: false });
      slider.addEventListener('input', () => this.show(Number(slider.value) - 1));
      const typed = () => {
        const w = Number(width.value);
        const c = Number(center.value);
        if (Number.isFinite(w) && w >= 1 && Number.isFinite(c)) this.setWindow({ width: w, center: c });
      };
      width.addEventListener('change', typed);
      center.addEventListener('change', typed);
      this.root.querySelectorAll('.oix-presets button').forEach((button) => {
        button.addEventListener('click', () => this.preset(button));
      });
      this.root.querySelector('.oix-zoom-in').addEventListener('click', () => this.zoomBy(ZOOM_STEP));
      this.root.querySelector('.oix-zoom-out').addEventListener('click', () => this.zoomBy(1 / ZOOM_STEP));
      this.root.querySelector('.oix-zoom-reset').addEventListener('click', () => this.resetView());
      play.addEventListener('click', () => (this.cine ? this.stopCine() : this.play()));
      this.bindDrag();
      this.root.addEventListener('keydown', (event) => this.key(event));
      new ResizeObserver(() => this.fit()).observe(this.ui.box);
    }

    preset(button) {
      if (button.dataset.preset === 'image') this.resetWindow();
      else this.setWindow({ width: Number(button.dataset.width), center: Number(button.dataset.center) });
    }

    bindDrag() {
      const { canvas } = this.ui;
      let last = null;
      canvas.addEventListener('contextmenu', (event) => event.preventDefault());
      canvas.addEventListener('pointerdown', (event) => {
        const chosen = this.root.querySelector('input[name="oix-drag-mode"]:checked');
        const mode = { 0: chosen ? chosen.value : 'window', 1: 'pan', 2: 'zoom' }[event.button];
        if (!mode) return;
        event.preventDefault();
        canvas.focus();
        canvas.setPointerCapture(event.pointerId);
        last = { x: event.clientX, y: event.clientY, mode };
      });
      canvas.addEventListener('pointermove', (event) => {
        if (!last) return;
        const dx = event.clientX - last.x;
        const dy = event.clientY - last.y;
        last.x = event.clientX;
        last.y = event.clientY;
        if (last.mode === 'window') this.dragWindow(dx, dy);
        else if (last.mode === 'zoom') this.zoomBy(Math.exp(-dy / 200));
        else {
          const scale = canvas.width / (canvas.clientWidth || canvas.width);  // CSS px → canvas px
          this.panBy(dx * scale, dy * scale);
        }
      });
      const end = () => { last = null; };
      canvas.addEventListener('pointerup', end);
      canvas.addEventListener('pointercancel', end);
    }

    // Across changes the width, down the centre, by an amount that suits the image's range.
    dragWindow(dx, dy) {
      const image = this.current && this.current.images[this.index];
      const frame = image && this.cache.get(image.key);
      if (!frame || !frame.stored || !this.window) return;
      const range = Math.abs((frame.max - frame.min) * image.instance.slope) || 1;
      const factor = Math.max(1, range / 512);
      this.setWindow({ width: this.window.width + dx * factor, center: this.window.center + dy * factor });
    }

    key(event) {
      const target = event.target;
      if (['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName) || event.altKey || event.metaKey) return;
      const onControl = ['BUTTON', 'SUMMARY', 'A'].includes(target.tagName);
      const presets = this.root.querySelectorAll('.oix-presets button');
      const handled = {
        ArrowUp: () => (event.shiftKey ? this.panBy(0, -10) : this.step(-1)),
        ArrowDown: () => (event.shiftKey ? this.panBy(0, 10) : this.step(1)),
        ArrowLeft: () => (event.shiftKey ? this.panBy(-10, 0) : this.step(-1)),
        ArrowRight: () => (event.shiftKey ? this.panBy(10, 0) : this.step(1)),
        PageUp: () => this.step(-PAGE_STEP),
        PageDown: () => this.step(PAGE_STEP),
        Home: () => this.current && this.show(0),
        End: () => this.current && this.show(this.current.images.length - 1),
        '+': () => this.zoomBy(ZOOM_STEP),
        '=': () => this.zoomBy(ZOOM_STEP),
        '-': () => this.zoomBy(1 / ZOOM_STEP),
        0: () => this.resetView(),
        '[': () => this.choose(this.seriesPosition - 1),
        ']': () => this.choose(this.seriesPosition + 1),
        ' ': onControl ? null : () => (this.cine ? this.stopCine() : this.play()),
      }[event.key] || (/^[1-5]$/.test(event.key) ? () => this.preset(presets[Number(event.key) - 1]) : null);
      if (!handled) return;
      event.preventDefault();
      handled();
    }
  }

  // Series in Series Number order, each a stack of its instances' frames in Instance Number order
  // (a multi-frame instance contributes each of its frames, PS3.3 C.7.6.6).
  function groupSeries(metadata) {
    const bySeries = new Map();
    metadata.forEach((meta) => {
      const rows = numeric(meta, 'rows', 0);
      const columns = numeric(meta, 'columns', 0);
      if (!rows || !columns) return;  // no image: a report, a presentation state…
      const instance = {
        meta, rows, columns,
        seriesUid: first(meta, 'seriesUid', ''), sopUid: first(meta, 'sopUid', ''),
        number: numeric(meta, 'instanceNumber', Infinity),
        frames: Math.max(1, numeric(meta, 'numberOfFrames', 1)),
        samples: numeric(meta, 'samples', 1), photometric: first(meta, 'photometric', 'MONOCHROME2'),
        planar: numeric(meta, 'planar', 0), bitsAllocated: numeric(meta, 'bitsAllocated', 16),
        bitsStored: numeric(meta, 'bitsStored', numeric(meta, 'bitsAllocated', 16)),
        pixelRepresentation: numeric(meta, 'pixelRepresentation', 0),
        slope: numeric(meta, 'slope', 1), intercept: numeric(meta, 'intercept', 0),
      };
      if (!bySeries.has(instance.seriesUid)) {
        bySeries.set(instance.seriesUid, {
          uid: instance.seriesUid, number: first(meta, 'seriesNumber', undefined),
          modality: first(meta, 'modality', ''), description: first(meta, 'seriesDescription', ''), instances: [],
        });
      }
      bySeries.get(instance.seriesUid).instances.push(instance);
    });
    const series = [...bySeries.values()];
    series.sort((a, b) => ((a.number ?? Infinity) - (b.number ?? Infinity)) || 0);
    series.forEach((each) => {
      each.instances.sort((a, b) => a.number - b.number || (a.sopUid < b.sopUid ? -1 : 1));
      each.images = each.instances.flatMap((instance) => Array.from({ length: instance.frames }, (_, k) => ({
        instance, frame: k + 1, key: `${instance.sopUid}/${k + 1}`,
      })));
    });
    return series;
  }

  document.querySelectorAll('.oix-viewer[data-dicomweb-root][data-study]').forEach((root) => {
    new Viewer(root).start();
  });
})();
