/**
 * Image-to-3D 4D player: a video's point cloud, one PLY per frame, played in 3D at the clip's own pace.
 *
 * Load it as a module (no inline script, no eval, nothing outside this site; a strict CSP holds):
 *
 *   <div data-player4d data-frames-url="/jobs/ID/frames/" data-frame-count="48" data-fps="24"
 *        data-duration="2.0" data-frame-times="0 0.0417 0.0833 …" data-units="relative units"></div>
 *   <script type="module" src="/static/js/player4d.js"></script>
 *
 * Contract with the page
 *   Attributes read:   data-player4d (marks the element), data-frames-url (frame n is GET data-frames-url + n: a
 *                      binary or ASCII PLY with x, y, z and red, green, blue; y up, camera at the origin looking
 *                      down -z), data-frame-count (frames), data-fps (frames per second of the clip),
 *                      data-duration (seconds; optional: last frame time + 1/fps), data-frame-times (optional,
 *                      space-separated seconds of each frame from the first: a variable frame rate plays as shot),
 *                      data-units (optional words shown with the size).
 *   Attributes set:    data-player-state  = "loading" | "ready" | "error"
 *                      data-frame         = index of the frame drawn (from 0)
 *                      data-playing       = "true" | "false"
 *                      data-cached-frames = frames held in memory now (at most CACHE_FRAMES)
 *                      data-requests      = frames asked of the server so far
 *   Events (bubbling CustomEvents on the element):
 *                      player4d:ready  detail {frames}          after the first frame is drawn
 *                      player4d:frame  detail {index, time}     each time another frame is drawn
 *                      player4d:error  detail {message}
 *   Frames are fetched as they are needed: the one to show and the PREFETCH_FRAMES after it, at most
 *   MAX_IN_FLIGHT at once, and at most CACHE_FRAMES are kept (the least recently used go first, never the one shown
 *   or those just ahead). Never the whole clip at once. When a frame is late the clock waits for it ("Buffering…").
 *   Controls: Play/Pause, a frame slider (arrow keys step a frame, Home/End), Loop, Reset view; orbit controls on the
 *   canvas. initAll(root) sets up the elements under root (idempotent; also run on import); removed elements
 *   release their WebGL context.
 */
import * as THREE from '../vendor/three/build/three.module.min.js';
import { OrbitControls } from '../vendor/three/addons/controls/OrbitControls.js';
import { PLYLoader } from '../vendor/three/addons/loaders/PLYLoader.js';
import { finiteBounds } from './bounds.js';
import { mounter } from './mount.js';

const FOV_DEGREES = 50; // vertical field of view of the player's camera
const FRAME_MARGIN = 1.06; // a little room around the first frame in the first view
const BACKGROUND = 0x1f2226; // as the still viewer (static/js/viewer.js)
export const PREFETCH_FRAMES = 6; // fetched ahead of the frame shown
export const CACHE_FRAMES = 16; // frames kept at most (each a few hundred kB at 20,000 points)
const MAX_IN_FLIGHT = 3; // frame requests at once

let serial = 0;

// ---------------------------------------------------------------------------------------------- helpers

function srgbToLinear(c) {
	return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
}

const SRGB8_TO_LINEAR = Float32Array.from({ length: 256 }, (_, i) => srgbToLinear(i / 255));

/** Float linear-light colours from the file's raw sRGB values (no 8-bit rounding in between, as the viewer). */
function linearColours(raw) {
	const values = raw.array;
	const out = new Float32Array(values.length);
	if (values instanceof Uint8Array) {
		for (let i = 0; i < values.length; i++) out[i] = SRGB8_TO_LINEAR[values[i]];
	} else {
		const scale = values instanceof Uint16Array ? 1 / 65535 : 1;
		for (let i = 0; i < values.length; i++) out[i] = srgbToLinear(Math.min(Math.max(values[i] * scale, 0), 1));
	}
	return new THREE.Float32BufferAttribute(out, 3);
}

function make(tag, className, attributes = {}) {
	const node = document.createElement(tag);
	if (className) node.className = className;
	for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
	return node;
}

function seconds(value) {
	return `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

function formatLength(value) {
	if (!Number.isFinite(value)) return '?';
	return value >= 100 ? String(Math.round(value)) : value.toPrecision(2).replace(/\.?0+$/, '') || '0';
}

class FrameError extends Error {}

// ---------------------------------------------------------------------------------------------- player

class Player4D {

	constructor(element) {
		this.element = element;
		this.id = `player4d-${++serial}`;
		const data = element.dataset;
		this.framesUrl = (data.framesUrl || '').trim();
		this.count = Math.max(0, Math.floor(Number(data.frameCount) || 0));
		this.fps = Number(data.fps) > 0 ? Number(data.fps) : 24;
		this.units = (data.units || '').trim();
		const times = (data.frameTimes || '').trim().split(/\s+/).filter(Boolean).map(Number);
		const steady = times.length === this.count && times.every((t, i) => Number.isFinite(t) && (i === 0 || t >= times[i - 1]));
		this.times = steady ? times : Array.from({ length: this.count }, (_, i) => i / this.fps);
		const last = this.count ? this.times[this.count - 1] : 0;
		this.duration = Number(data.duration) > last ? Number(data.duration) : last + 1 / this.fps;

		this.cache = new Map(); // index -> {promise, geometry, used}; Map order is not relied on (see evict)
		this.inFlight = 0;
		this.requests = 0;
		this.useClock = 0;
		this.shown = -1; // the frame drawn
		this.wanted = 0; // the frame the clock or the slider asks for
		this.playing = false;
		this.loop = true;
		this.frame = 0; // requestAnimationFrame handle of the next render
		this.tick = 0; // requestAnimationFrame handle of the playback clock
		this.buildDom();
	}

	buildDom() {
		const el = this.element;
		el.classList.add('player4d-root');
		this.stage = make('div', 'viewer-stage player4d-stage');
		this.canvas = make('canvas', 'viewer-canvas', {
			tabindex: '0', role: 'img',
			'aria-label': "3D view of the video's point cloud. Drag to rotate, scroll or pinch to zoom, right-drag or two fingers to pan.",
		});
		this.stage.append(this.canvas);

		const bar = make('div', 'player4d-controls');
		this.playButton = make('button', 'viewer-button player4d-play', { type: 'button', disabled: '' });
		this.playButton.textContent = 'Play';
		const sliderLabel = make('label', 'visually-hidden', { for: `${this.id}-frame` });
		sliderLabel.textContent = 'Frame';
		this.slider = make('input', 'player4d-slider', {
			type: 'range', id: `${this.id}-frame`, min: '0', max: String(Math.max(0, this.count - 1)), step: '1', value: '0',
			disabled: '',
		});
		this.counter = make('output', 'player4d-counter', { for: `${this.id}-frame`, 'aria-live': 'off' });
		const loopField = make('span', 'viewer-field player4d-loop');
		this.loopInput = make('input', null, { type: 'checkbox', id: `${this.id}-loop`, checked: '' });
		const loopLabel = make('label', null, { for: `${this.id}-loop` });
		loopLabel.textContent = 'Loop';
		loopField.append(this.loopInput, loopLabel);
		this.resetButton = make('button', 'viewer-button player4d-reset', { type: 'button', disabled: '' });
		this.resetButton.textContent = 'Reset view';
		bar.append(this.playButton, sliderLabel, this.slider, this.counter, loopField, this.resetButton);

		this.status = make('p', 'viewer-status', { role: 'status', 'aria-live': 'polite' });
		const hint = make('p', 'viewer-hint');
		hint.textContent = 'Drag to rotate · scroll or pinch to zoom · right-drag or two fingers to pan';
		el.replaceChildren(this.stage, bar, this.status, hint);
		this.showCounter(0);
	}

	setStatus(text, kind = 'info') {
		this.status.textContent = text;
		this.status.dataset.kind = kind;
	}

	fail(message) {
		this.pause();
		this.setStatus(message, 'error');
		this.element.dataset.playerState = 'error';
		this.element.dispatchEvent(new CustomEvent('player4d:error', { bubbles: true, detail: { message } }));
	}

	async start() {
		this.element.dataset.playerState = 'loading';
		this.element.dataset.playing = 'false';
		if (!this.framesUrl || !this.count) {
			this.fail('There are no frames to play (the page did not say where they are).');
			return;
		}
		this.setStatus('Loading the first frame…');
		try {
			this.createRenderer();
		} catch {
			this.fail('The 3D view is not available: this browser or device could not start WebGL graphics. '
				+ 'You can still download the 4D point cloud.');
			return;
		}
		let geometry;
		try {
			geometry = await this.request(0);
		} catch (error) {
			if (!this.disposed) this.fail(this.explain(error, 0));
			return;
		}
		if (this.disposed) return;
		const framing = finiteBounds(geometry);
		if (!framing) {
			this.fail('The first frame has no points to show.');
			return;
		}
		this.framing = framing;
		const material = new THREE.PointsMaterial({
			size: 2, sizeAttenuation: false, vertexColors: Boolean(geometry.getAttribute('color')),
			color: geometry.getAttribute('color') ? 0xffffff : 0xd0d4da,
		});
		this.points = new THREE.Points(geometry, material);
		this.points.frustumCulled = false; // each frame's bounds differ; the cloud is always in view anyway
		this.scene.add(this.points);
		this.resize();
		this.resetView();
		material.size = this.defaultPointSize();
		this.display(0);
		this.wireControls();
		this.pump();
		this.element.dataset.playerState = 'ready';
		this.element.dispatchEvent(new CustomEvent('player4d:ready', { bubbles: true, detail: { frames: this.count } }));
	}

	createRenderer() {
		const renderer = new THREE.WebGLRenderer({ canvas: this.canvas, antialias: true, preserveDrawingBuffer: true });
		renderer.outputColorSpace = THREE.SRGBColorSpace;
		renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
		renderer.setClearColor(BACKGROUND, 1);
		this.renderer = renderer;
		this.scene = new THREE.Scene();
		this.camera = new THREE.PerspectiveCamera(FOV_DEGREES, 4 / 3, 0.01, 1000);
		this.resize();
		this.controls = new OrbitControls(this.camera, this.canvas);
		this.controls.zoomToCursor = true;
		this.controls.screenSpacePanning = true;
		this.controls.enabled = false;
		this.controls.addEventListener('change', () => this.requestRender());
		this.resizeObserver = new ResizeObserver(() => {
			if (this.resize()) this.requestRender();
		});
		this.resizeObserver.observe(this.stage);
		this.canvas.addEventListener('webglcontextlost', (event) => {
			if (this.disposed) return;
			event.preventDefault();
			this.pause();
			this.setStatus('The 3D view was paused by the browser (graphics memory was reclaimed). It will come back by itself.', 'error');
		});
		this.canvas.addEventListener('webglcontextrestored', () => {
			this.setStatus(this.summary || '');
			this.requestRender();
		});
	}

	resize() {
		const width = Math.max(1, Math.round(this.canvas.clientWidth || this.stage.clientWidth || 640));
		const height = Math.max(1, Math.round(this.canvas.clientHeight || width * 0.75));
		const size = this.renderer.getSize(new THREE.Vector2());
		if (size.x === width && size.y === height) return false;
		this.renderer.setSize(width, height, false);
		this.camera.aspect = width / height;
		this.camera.updateProjectionMatrix();
		return true;
	}

	// ------------------------------------------------------------------------------------------ frames

	/** Frame ``index``'s geometry (a promise), fetched once and kept in the bounded cache. */
	request(index) {
		let entry = this.cache.get(index);
		if (!entry) {
			entry = { geometry: null, used: 0 };
			entry.promise = this.fetchFrame(index).then((geometry) => {
				if (this.disposed || this.cache.get(index) !== entry) {
					geometry.dispose(); // evicted or torn down while it was on its way
				} else {
					entry.geometry = geometry;
				}
				return geometry;
			}, (error) => {
				if (this.cache.get(index) === entry) this.cache.delete(index); // a later try may work
				throw error;
			});
			entry.promise.catch(() => {}); // a prefetch nobody awaits must not report an unhandled rejection
			entry.used = ++this.useClock;
			this.cache.set(index, entry);
			this.evict();
		}
		entry.used = ++this.useClock;
		return entry.promise;
	}

	async fetchFrame(index) {
		this.inFlight++;
		this.requests++;
		this.element.dataset.requests = String(this.requests);
		try {
			let response;
			try {
				response = await fetch(this.framesUrl + index, { credentials: 'same-origin' });
			} catch {
				throw new FrameError('the connection failed; check your network and reload the page');
			}
			if (response.status === 404 || response.status === 410) {
				throw new FrameError('it is not on the server (the result may have been deleted or expired)');
			}
			if (!response.ok) throw new FrameError(`the server answered ${response.status}`);
			const bytes = await response.arrayBuffer();
			return this.parsePly(bytes);
		} finally {
			this.inFlight--;
			this.element.dataset.cachedFrames = String(this.cache.size);
			if (!this.disposed) queueMicrotask(() => this.pump());
		}
	}

	parsePly(bytes) {
		const magic = new Uint8Array(bytes, 0, Math.min(3, bytes.byteLength));
		if (String.fromCharCode(...magic) !== 'ply') throw new FrameError('it is not a PLY file');
		const loader = new PLYLoader();
		loader.setPropertyNameMapping({ red: 'player_srgb_r', green: 'player_srgb_g', blue: 'player_srgb_b' });
		loader.setCustomPropertyNameMapping({ playerSrgb: ['player_srgb_r', 'player_srgb_g', 'player_srgb_b'] });
		const geometry = loader.parse(bytes);
		if (!geometry.getAttribute('position')) throw new FrameError('it has no points');
		const raw = geometry.getAttribute('playerSrgb');
		if (raw) {
			geometry.setAttribute('color', linearColours(raw));
			geometry.deleteAttribute('playerSrgb');
		}
		geometry.deleteAttribute('normal');
		return geometry;
	}

	/** The frames worth having now: the one wanted and the PREFETCH_FRAMES after it (round the end when looping). */
	window() {
		const frames = [];
		for (let step = 0; step <= PREFETCH_FRAMES; step++) {
			let index = this.wanted + step;
			if (index >= this.count) {
				if (!this.loop) break;
				index %= this.count;
			}
			if (!frames.includes(index)) frames.push(index);
		}
		return frames;
	}

	/** Start fetching the frames of the window that are not here yet, MAX_IN_FLIGHT at most at a time. */
	pump() {
		if (this.disposed || this.element.dataset.playerState === 'error') return;
		for (const index of this.window()) {
			if (this.inFlight >= MAX_IN_FLIGHT) break;
			if (!this.cache.has(index)) this.request(index).catch(() => {});
		}
	}

	/** Keep at most CACHE_FRAMES: drop the least recently used, never the frame shown or one in the window. */
	evict() {
		if (this.cache.size <= CACHE_FRAMES) return;
		const keep = new Set([this.shown, ...this.window()]);
		const candidates = [...this.cache.entries()].filter(([index]) => !keep.has(index))
			.sort((a, b) => a[1].used - b[1].used);
		for (const [index, entry] of candidates) {
			if (this.cache.size <= CACHE_FRAMES) break;
			this.cache.delete(index);
			entry.geometry?.dispose();
		}
		this.element.dataset.cachedFrames = String(this.cache.size);
	}

	explain(error, index) {
		const why = error instanceof FrameError ? error.message : 'it could not be read';
		return `Frame ${index + 1} could not be loaded: ${why}.`;
	}

	/** Draw frame ``index`` if it is here; true when it is drawn. */
	display(index) {
		const entry = this.cache.get(index);
		if (!entry?.geometry) return false;
		entry.used = ++this.useClock;
		if (index !== this.shown) {
			this.points.geometry = entry.geometry;
			this.shown = index;
			this.element.dataset.frame = String(index);
			this.element.dispatchEvent(new CustomEvent('player4d:frame', { bubbles: true, detail: { index, time: this.times[index] } }));
		}
		if (!this.dragging) this.slider.value = String(index);
		this.showCounter(index);
		this.requestRender();
		return true;
	}

	showCounter(index) {
		this.counter.textContent = `Frame ${index + 1} of ${this.count} · ${seconds(this.times[index] ?? 0)} of ${seconds(this.duration)}`;
	}

	/** Show frame ``index`` as soon as it is here (a seek: the slider, the keys, or the end of a loop). */
	async seek(index) {
		index = Math.min(Math.max(0, Math.round(index)), this.count - 1);
		this.wanted = index;
		this.clockStart = { time: this.times[index], wall: performance.now() };
		this.showCounter(index);
		this.pump();
		if (this.display(index)) return;
		try {
			await this.request(index);
		} catch (error) {
			if (!this.disposed && this.wanted === index) this.fail(this.explain(error, index));
			return;
		}
		if (this.disposed || this.wanted !== index) return; // another seek came first
		this.display(index);
		this.clockStart = { time: this.times[index], wall: performance.now() };
	}

	// ------------------------------------------------------------------------------------------ playback

	/** The last frame whose time is at or before ``t`` seconds. */
	frameAt(t) {
		let low = 0, high = this.count - 1;
		while (low < high) {
			const middle = (low + high + 1) >> 1;
			if (this.times[middle] <= t) low = middle;
			else high = middle - 1;
		}
		return low;
	}

	play() {
		if (this.playing || !this.points) return;
		if (!this.loop && this.shown >= this.count - 1) this.seek(0); // played to the end: from the start again
		this.playing = true;
		this.clockStart = { time: this.times[Math.max(0, this.wanted)], wall: performance.now() };
		this.playButton.textContent = 'Pause';
		this.element.dataset.playing = 'true';
		this.tick = requestAnimationFrame((now) => this.advance(now));
	}

	pause() {
		this.playing = false;
		if (this.tick) cancelAnimationFrame(this.tick);
		this.tick = 0;
		if (this.playButton) {
			this.playButton.textContent = 'Play';
		}
		this.element.dataset.playing = 'false';
		if (this.status && this.status.dataset.kind !== 'error') this.setStatus(this.summary || '');
	}

	/** One step of the clock: the frame of this moment, or wait for it (the clock stands still while it loads). */
	advance(now) {
		this.tick = 0;
		if (!this.playing || this.disposed) return;
		let t = this.clockStart.time + (now - this.clockStart.wall) / 1000;
		if (t >= this.duration) {
			if (!this.loop) {
				this.wanted = this.count - 1;
				if (this.display(this.count - 1)) {
					this.pause();
					return;
				}
				t = this.times[this.count - 1];
			} else {
				t %= this.duration;
				this.clockStart = { time: t, wall: now };
			}
		}
		const index = this.frameAt(t);
		this.wanted = index;
		if (index === this.shown || this.display(index)) {
			if (this.status.dataset.kind === 'buffering') this.setStatus(this.summary);
		} else {
			// Late: hold the clock at this frame's time until it is here.
			this.clockStart = { time: this.times[index], wall: now };
			if (this.status.dataset.kind !== 'buffering') this.setStatus('Buffering…', 'buffering');
			this.request(index).catch((error) => {
				if (!this.disposed && this.wanted === index) this.fail(this.explain(error, index));
			});
		}
		this.pump();
		this.tick = requestAnimationFrame((next) => this.advance(next));
	}

	wireControls() {
		this.controls.enabled = true;
		for (const control of [this.playButton, this.slider, this.resetButton]) control.disabled = false;
		this.playButton.addEventListener('click', () => (this.playing ? this.pause() : this.play()));
		this.slider.addEventListener('pointerdown', () => { this.dragging = true; });
		this.slider.addEventListener('pointerup', () => { this.dragging = false; });
		this.slider.addEventListener('change', () => { this.dragging = false; });
		this.slider.addEventListener('input', () => this.seek(Number(this.slider.value)));
		this.loopInput.addEventListener('change', () => {
			this.loop = this.loopInput.checked;
			this.element.dataset.loop = String(this.loop);
		});
		this.element.dataset.loop = String(this.loop);
		this.resetButton.addEventListener('click', () => this.resetView());
		document.addEventListener('visibilitychange', this.onVisibility = () => {
			// Hidden tabs run no animation frames: come back where it was, not a jump ahead.
			if (!document.hidden && this.playing) this.clockStart = { time: this.times[this.shown], wall: performance.now() };
		});
		const { x, y, z } = this.framing.size;
		const size = this.units ? ` · first frame about ${formatLength(x)} × ${formatLength(y)} × ${formatLength(z)} ${this.units}` : '';
		this.summary = `${this.count.toLocaleString('en')} frames at ${Number(this.fps.toPrecision(3))} frames per second${size}`;
		this.setStatus(this.summary);
	}

	// ------------------------------------------------------------------------------------------ view

	/** The first view: down -z at the first frame's centre, from just far enough back that it all shows (for a
	 * clip, near where the camera stood; every later frame is seen from the same place, so motion shows). */
	resetView() {
		const { center, size, box } = this.framing;
		const tanV = Math.tan(THREE.MathUtils.degToRad(this.camera.fov) / 2);
		const tanH = tanV * this.camera.aspect;
		const needed = box.max.z + Math.max(size.x / 2 / tanH, size.y / 2 / tanV);
		const radius = size.length() / 2;
		const distance = Math.max((needed - center.z) * FRAME_MARGIN, 1e-3 * Math.max(radius, Math.abs(center.z), 1e-3));
		const reach = distance + radius;
		this.camera.near = Math.max(reach * 1e-4, 1e-6);
		this.camera.far = reach * 50;
		this.camera.up.set(0, 1, 0);
		this.camera.position.set(center.x, center.y, center.z + distance);
		this.camera.lookAt(center);
		this.camera.updateProjectionMatrix();
		this.controls.target.copy(center);
		this.controls.minDistance = distance * 1e-3;
		this.controls.maxDistance = reach * 20;
		this.controls.update();
		this.requestRender();
	}

	/** A point size (CSS px) that closes the gaps between neighbouring points of the first frame in the first view. */
	defaultPointSize() {
		const { size, count } = this.framing;
		const eye = this.camera.position;
		const depth = Math.max(eye.z - this.framing.center.z, 1e-6);
		const spacing = Math.sqrt((size.x * size.y) / count) / depth; // at unit depth
		const pixels = spacing * (this.canvas.clientHeight || 480) / 2 / Math.tan(THREE.MathUtils.degToRad(this.camera.fov) / 2);
		const points = Math.round(pixels * 1.25 * 2) / 2;
		return Number.isFinite(points) ? Math.min(Math.max(points, 1), 6) : 2;
	}

	requestRender() {
		if (this.frame || this.disposed) return;
		this.frame = requestAnimationFrame(() => {
			this.frame = 0;
			if (!this.disposed && this.renderer) this.renderer.render(this.scene, this.camera);
		});
	}

	dispose() {
		this.disposed = true;
		this.pause();
		if (this.frame) cancelAnimationFrame(this.frame);
		if (this.onVisibility) document.removeEventListener('visibilitychange', this.onVisibility);
		this.resizeObserver?.disconnect();
		this.controls?.dispose();
		for (const entry of this.cache.values()) entry.geometry?.dispose();
		this.cache.clear();
		this.points?.material.dispose();
		if (this.renderer) {
			this.renderer.dispose();
			this.renderer.forceContextLoss();
		}
	}
}

export const { mount: initPlayer, mountAll: initAll } = mounter({
	selector: '[data-player4d]', state: 'playerState', create: (element) => new Player4D(element), what: '3D player',
});
