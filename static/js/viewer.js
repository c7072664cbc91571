/**
 * Image-to-3D in-browser viewer: a coloured point cloud (.ply) and, on request, a mesh (.glb).
 *
 * Load it as a module; it needs no inline script, no eval and nothing outside this site:
 *
 *   <link rel="stylesheet" href="/static/css/viewer.css">
 *   <div data-viewer data-ply-url="/outputs/x.ply" data-mesh-url="/outputs/x.glb" data-units="metres"></div>
 *   <script type="module" src="/static/js/viewer.js"></script>
 *
 * Contract with the page
 *   Attributes read:   data-viewer (marks the element), data-ply-url (required; binary or ASCII PLY with
 *                      x, y, z and optional red, green, blue; y up, camera at the origin looking down -z),
 *                      data-mesh-url (optional .glb/.gltf; adds a "Show mesh" toggle, loaded on first use),
 *                      data-splat-url (optional 3D Gaussian Splatting .ply, same frame as the cloud; adds a
 *                                      "Show splats" toggle, loaded on first use with the vendored Spark renderer,
 *                                      which needs the page's CSP to allow 'wasm-unsafe-eval'),
 *                      data-units (optional words such as "metres" or "relative units", shown with the size),
 *                      data-up (optional "z": the PLY is z up, (x, -z, y) of the frame above; it is turned back).
 *   Attributes set:    data-viewer-state  = "loading" | "ready" | "error"
 *                      data-point-count   = number of points drawn (when ready)
 *                      data-mesh-state    = "loading" | "ready" | "error" (only once the mesh was asked for)
 *                      data-splat-state   = "loading" | "ready" | "error" (only once the splats were asked for)
 *                      data-measure-a, data-measure-b = "x,y,z" (6 decimals, the PLY file's own coordinates) of the
 *                                           picked points while measuring; data-measure-distance = their distance
 *                                           (6 decimals). Removed when the measurement is cleared.
 *   Events (bubbling CustomEvents on the element):
 *                      viewer:ready  detail {points}          after the first frame with the cloud is drawn
 *                      viewer:error  detail {message}         when the cloud cannot be shown
 *                      viewer:mesh   detail {state, triangles | message}   after a mesh load succeeds or fails
 *                      viewer:splats detail {state, splats | message}      after a splat load succeeds or fails
 *                      viewer:measure detail {a, b, distance, units}       when a measurement is complete; a and b
 *                                           are [x, y, z] in the file's frame, units is "metres" when data-units
 *                                           says metres, otherwise "relative units"
 *   The mesh and the splats are shown in place of the points, one at a time: ticking one unticks the other.
 *   Measuring: the "Measure" toggle (aria-pressed). While on, a click (a press that moves less than a few pixels;
 *   orbit drags do not count) picks the drawn point under the cursor: point A, then point B and the distance A–B;
 *   a third click starts again. Escape clears the measurement (a second Escape, or the toggle, ends measuring).
 *   Elements with data-viewer that are added later (e.g. a result fragment swapped in by script) are set up
 *   automatically; removed ones release their WebGL context. initViewer(element) is exported as well.
 */
import * as THREE from '../vendor/three/build/three.module.min.js';
import { OrbitControls } from '../vendor/three/addons/controls/OrbitControls.js';
import { PLYLoader } from '../vendor/three/addons/loaders/PLYLoader.js';
import { finiteBounds } from './bounds.js';
import { mounter } from './mount.js';

const FOV_DEGREES = 50; // vertical field of view of the viewer's camera
const FRAME_MARGIN = 1.06; // leave a little room around the cloud in the first view
const BACKGROUND = 0x1f2226;
const POINT_SIZE = { min: 0.5, max: 10, step: 0.5 }; // CSS pixels
const CLICK_SLOP = 4; // CSS px a press may move and still be a click (more is an orbit drag)
const PICK_SLACK = { mouse: 6, pen: 8, touch: 14 }; // CSS px around a drawn point that still picks it
const MEASURE_COLOURS = { a: 0xffd400, b: 0x29e0ff, line: 0xffffff, outline: 0x000000 };

let serial = 0;

// ---------------------------------------------------------------------------------------------- helpers

function srgbToLinear(c) {
	return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
}

const SRGB8_TO_LINEAR = Float32Array.from({ length: 256 }, (_, i) => srgbToLinear(i / 255));

/** A Float32 linear-light colour attribute from raw sRGB values, without any 8-bit rounding in between. */
function linearColours(raw) {
	const values = raw.array;
	const out = new Float32Array(values.length);
	if (values instanceof Uint8Array) {
		for (let i = 0; i < values.length; i++) out[i] = SRGB8_TO_LINEAR[values[i]];
	} else {
		const scale = values instanceof Uint16Array ? 1 / 65535 : 1; // float colours are already 0..1
		for (let i = 0; i < values.length; i++) out[i] = srgbToLinear(Math.min(Math.max(values[i] * scale, 0), 1));
	}
	return new THREE.Float32BufferAttribute(out, 3);
}

function formatLength(value) {
	if (!Number.isFinite(value)) return '?';
	return value >= 100 ? String(Math.round(value)) : value.toPrecision(2).replace(/\.?0+$/, '') || '0';
}

/** A distance for people: three decimals, or three significant digits when it is small. */
function formatDistance(value) {
	return value >= 0.01 || value === 0 ? value.toFixed(3) : value.toPrecision(3);
}

function make(tag, className, attributes = {}) {
	const node = document.createElement(tag);
	if (className) node.className = className;
	for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
	return node;
}

class LoadError extends Error {}

/** Resolves after the browser had a chance to paint (or soon, in a hidden tab where frames do not run). */
function nextPaint() {
	return new Promise((resolve) => {
		const timer = setTimeout(resolve, 100);
		requestAnimationFrame(() => setTimeout(() => {
			clearTimeout(timer);
			resolve();
		}, 0));
	});
}

/** fetch() with messages a person can act on. A download not written yet answers 202 ("preparing", with
 * Retry-After) until it is whole: ask again, for up to PREPARING_LIMIT_MS. */
const PREPARING_LIMIT_MS = 180000;

async function fetchBytes(url, what) {
	let response;
	const started = Date.now();
	for (;;) {
		try {
			response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json, */*;q=0.1' } });
		} catch {
			throw new LoadError(`Could not download the ${what}: the connection failed. Check your network and reload the page.`);
		}
		if (response.status !== 202) break;
		if (Date.now() - started > PREPARING_LIMIT_MS) {
			throw new LoadError(`The ${what} is still being prepared. Reload the page in a minute.`);
		}
		const seconds = Math.min(10, Math.max(0.5, Number(response.headers.get('Retry-After')) || 2));
		await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
	}
	if (response.status === 404 || response.status === 410) {
		throw new LoadError(`The ${what} file was not found on the server (it may have been deleted or expired).`);
	}
	if (!response.ok) {
		throw new LoadError(`Could not download the ${what}: the server answered ${response.status}${response.statusText ? ' ' + response.statusText : ''}.`);
	}
	try {
		return await response.arrayBuffer();
	} catch {
		throw new LoadError(`The download of the ${what} was interrupted. Reload the page to try again.`);
	}
}

// ---------------------------------------------------------------------------------------------- viewer

class Viewer {

	constructor(element) {
		this.element = element;
		this.id = `viewer-${++serial}`;
		this.plyUrl = (element.dataset.plyUrl || '').trim();
		this.meshUrl = (element.dataset.meshUrl || '').trim();
		this.units = (element.dataset.units || '').trim();
		this.zUp = (element.dataset.up || '').trim() === 'z';
		this.frame = 0;
		this.points = null;
		this.mesh = null;
		this.meshPromise = null;
		this.splatUrl = (element.dataset.splatUrl || '').trim();
		this.splats = null;
		this.splatPromise = null;
		this.summary = '';
		this.buildDom();
	}

	buildDom() {
		const el = this.element;
		el.classList.add('viewer-root');

		this.stage = make('div', 'viewer-stage');
		this.canvas = make('canvas', 'viewer-canvas', {
			tabindex: '0',
			role: 'img',
			'aria-label': '3D view of the point cloud. Drag to rotate, scroll or pinch to zoom, '
				+ 'right-drag or two fingers to pan; arrow keys pan when focused.',
		});
		this.stage.append(this.canvas);

		const toolbar = make('div', 'viewer-toolbar');

		this.resetButton = make('button', 'viewer-button viewer-reset', { type: 'button', disabled: '' });
		this.resetButton.textContent = 'Reset view';

		const sizeField = make('span', 'viewer-field viewer-size');
		const sizeLabel = make('label', null, { for: `${this.id}-size` });
		sizeLabel.textContent = 'Point size';
		this.sizeInput = make('input', null, {
			type: 'range', id: `${this.id}-size`, min: String(POINT_SIZE.min), max: String(POINT_SIZE.max),
			step: String(POINT_SIZE.step), value: '2', disabled: '',
		});
		this.sizeOutput = make('output', 'viewer-size-value', { for: `${this.id}-size` });
		this.sizeOutput.textContent = '2 px';
		sizeField.append(sizeLabel, this.sizeInput, this.sizeOutput);

		this.measureButton = make('button', 'viewer-button viewer-measure', {
			type: 'button', disabled: '', 'aria-pressed': 'false',
			title: 'Click two points of the cloud to measure the distance between them (Esc clears)',
		});
		this.measureButton.textContent = 'Measure';

		toolbar.append(this.resetButton, sizeField, this.measureButton);

		if (this.meshUrl) {
			const meshField = make('span', 'viewer-field viewer-mesh');
			this.meshInput = make('input', null, { type: 'checkbox', id: `${this.id}-mesh`, disabled: '' });
			const meshLabel = make('label', null, { for: `${this.id}-mesh` });
			meshLabel.textContent = 'Show mesh';
			meshField.append(this.meshInput, meshLabel);
			toolbar.append(meshField);
		}

		if (this.splatUrl) {
			const splatField = make('span', 'viewer-field viewer-splats');
			this.splatInput = make('input', null, { type: 'checkbox', id: `${this.id}-splats`, disabled: '' });
			const splatLabel = make('label', null, { for: `${this.id}-splats` });
			splatLabel.textContent = 'Show splats';
			splatField.append(this.splatInput, splatLabel);
			toolbar.append(splatField);
		}

		this.status = make('p', 'viewer-status', { role: 'status', 'aria-live': 'polite' });
		const hint = make('p', 'viewer-hint');
		hint.textContent = 'Drag to rotate · scroll or pinch to zoom · right-drag or two fingers to pan';
		this.measureReadout = make('p', 'viewer-measure-readout', { role: 'status', 'aria-live': 'polite', hidden: '' });
		toolbar.append(this.status, this.measureReadout, hint);

		el.replaceChildren(this.stage, toolbar);
	}

	setStatus(text, kind = 'info') {
		this.status.textContent = text;
		this.status.dataset.kind = kind;
	}

	fail(message) {
		this.setStatus(message, 'error');
		this.element.dataset.viewerState = 'error';
		delete this.element.dataset.pointCount;
		this.element.dispatchEvent(new CustomEvent('viewer:error', { bubbles: true, detail: { message } }));
	}

	async start() {
		this.element.dataset.viewerState = 'loading';
		this.setStatus('Loading the point cloud…');

		if (!this.plyUrl) {
			this.fail('There is no point cloud to show (the page did not say which file to load).');
			return;
		}
		try {
			this.createRenderer();
		} catch (error) {
			this.fail('The 3D view is not available: this browser or device could not start WebGL graphics. '
				+ 'You can still download the files.');
			return;
		}

		let geometry;
		try {
			const bytes = await fetchBytes(this.plyUrl, 'point cloud');
			if (this.disposed) return;
			this.setStatus('Preparing the point cloud…');
			await nextPaint(); // let that message show before the (synchronous) parse
			geometry = this.parsePly(bytes);
		} catch (error) {
			if (!this.disposed) this.fail(error instanceof LoadError ? error.message : 'The point cloud file could not be read: it is damaged or not a PLY file.');
			return;
		}

		const framing = finiteBounds(geometry);
		if (!framing) {
			geometry.dispose();
			this.fail('The point cloud is empty: there are no points to show.');
			return;
		}
		this.framing = framing;
		this.showPoints(geometry, framing);
	}

	createRenderer() {
		const renderer = new THREE.WebGLRenderer({
			canvas: this.canvas, antialias: true, preserveDrawingBuffer: true, powerPreference: 'high-performance',
		});
		renderer.outputColorSpace = THREE.SRGBColorSpace; // stored colours are sRGB; shaders work in linear light
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
		this.controls.listenToKeyEvents(this.canvas);
		this.controls.addEventListener('change', () => this.requestRender());

		this.resizeObserver = new ResizeObserver(() => {
			if (this.resize()) this.requestRender();
		});
		this.resizeObserver.observe(this.stage);

		this.canvas.addEventListener('webglcontextlost', (event) => {
			if (this.disposed) return;
			event.preventDefault(); // ask the browser to give the context back
			this.setStatus('The 3D view was paused by the browser (graphics memory was reclaimed). It will come back by itself.', 'error');
		});
		this.canvas.addEventListener('webglcontextrestored', () => {
			this.setStatus(this.summary);
			this.requestRender();
		});
	}

	/** Match the drawing buffer to the canvas's CSS size; true when it changed. */
	resize() {
		const width = Math.max(1, Math.round(this.canvas.clientWidth || this.stage.clientWidth || 640));
		const height = Math.max(1, Math.round(this.canvas.clientHeight || width * 0.75));
		const size = this.renderer.getSize(new THREE.Vector2());
		if (size.x === width && size.y === height) return false;
		this.renderer.setSize(width, height, false); // CSS decides the displayed size
		this.camera.aspect = width / height;
		this.camera.updateProjectionMatrix();
		return true;
	}

	parsePly(bytes) {
		const magic = new Uint8Array(bytes, 0, Math.min(4, bytes.byteLength));
		if (String.fromCharCode(...magic).replace(/\r?\n?$/, '') !== 'ply') throw new Error('not a PLY file');
		const loader = new PLYLoader();
		// Read red/green/blue as raw numbers: the loader itself would round linear colours to 8 bits,
		// which bands the dark parts of a photo. They become exact float linear colours below.
		loader.setPropertyNameMapping({ red: 'viewer_srgb_r', green: 'viewer_srgb_g', blue: 'viewer_srgb_b' });
		loader.setCustomPropertyNameMapping({ viewerSrgb: ['viewer_srgb_r', 'viewer_srgb_g', 'viewer_srgb_b'] });
		const geometry = loader.parse(bytes);
		if (!geometry.getAttribute('position')) throw new Error('no positions');
		// A z-up file (the job's "up" option, for Blender) back in the y-up frame that everything here uses.
		if (this.zUp) geometry.rotateX(-Math.PI / 2);
		const raw = geometry.getAttribute('viewerSrgb');
		if (raw) {
			geometry.setAttribute('color', linearColours(raw));
			geometry.deleteAttribute('viewerSrgb');
		}
		geometry.deleteAttribute('normal'); // points are unlit; save the memory
		return geometry;
	}

	/**
	 * The first view: looking straight down -z at the centre of the cloud, from just far enough back that
	 * every point is inside the picture. For a cloud made from a photo this puts the camera near the origin,
	 * where the photographer stood, so the view looks like the photo.
	 */
	homeView() {
		const { center, size } = this.framing;
		const position = this.points.geometry.getAttribute('position');
		const tanV = Math.tan(THREE.MathUtils.degToRad(this.camera.fov) / 2);
		const tanH = tanV * this.camera.aspect;
		let cameraZ = -Infinity;
		for (let i = 0; i < position.count; i++) {
			const x = position.getX(i), y = position.getY(i), z = position.getZ(i);
			const needed = z + Math.max(Math.abs(x - center.x) / tanH, Math.abs(y - center.y) / tanV);
			if (needed > cameraZ) cameraZ = needed; // NaN never wins the comparison
		}
		const radius = size.length() / 2;
		const tiny = 1e-3 * Math.max(radius, Math.abs(center.z), 1e-3);
		const distance = Math.max((cameraZ - center.z) * FRAME_MARGIN, tiny);
		return { target: center.clone(), position: new THREE.Vector3(center.x, center.y, center.z + distance), distance, radius };
	}

	resetView() {
		const home = this.homeView();
		const reach = home.distance + home.radius;
		this.camera.near = Math.max(reach * 1e-4, 1e-6);
		this.camera.far = reach * 50;
		this.camera.up.set(0, 1, 0);
		this.camera.position.copy(home.position);
		this.camera.lookAt(home.target);
		this.camera.updateProjectionMatrix();
		this.controls.target.copy(home.target);
		this.controls.minDistance = home.distance * 1e-3;
		this.controls.maxDistance = reach * 20;
		this.controls.update();
		this.requestRender();
	}

	/** A point size (CSS px) that closes the gaps between neighbouring points in the first view. */
	defaultPointSize() {
		const position = this.points.geometry.getAttribute('position');
		const eye = this.camera.position;
		let uMin = Infinity, uMax = -Infinity, vMin = Infinity, vMax = -Infinity;
		for (let i = 0; i < position.count; i++) {
			const depth = eye.z - position.getZ(i);
			if (!(depth > 0)) continue;
			const u = (position.getX(i) - eye.x) / depth, v = (position.getY(i) - eye.y) / depth;
			if (u < uMin) uMin = u;
			if (u > uMax) uMax = u;
			if (v < vMin) vMin = v;
			if (v > vMax) vMax = v;
		}
		const spacing = Math.sqrt(((uMax - uMin) * (vMax - vMin)) / this.framing.count); // at unit depth
		const pixels = spacing * (this.canvas.clientHeight || 480) / 2 / Math.tan(THREE.MathUtils.degToRad(this.camera.fov) / 2);
		const size = Math.round(pixels * 1.25 / POINT_SIZE.step) * POINT_SIZE.step;
		return Number.isFinite(size) ? Math.min(Math.max(size, 1), 6) : 2;
	}

	showPoints(geometry, framing) {
		const hasColour = Boolean(geometry.getAttribute('color'));
		const material = new THREE.PointsMaterial({
			size: 2, sizeAttenuation: false, vertexColors: hasColour, color: hasColour ? 0xffffff : 0xd0d4da,
		});
		this.points = new THREE.Points(geometry, material);
		this.scene.add(this.points);

		this.resize();
		this.resetView();
		this.setPointSize(this.defaultPointSize());

		this.summary = this.describe(framing);
		this.setStatus(this.summary);
		this.wireControls();

		// First frame now, so that the state below is only set once the cloud is really on the canvas.
		this.render();
		this.element.dataset.pointCount = String(framing.count);
		this.element.dataset.viewerState = 'ready';
		this.element.dispatchEvent(new CustomEvent('viewer:ready', { bubbles: true, detail: { points: framing.count } }));
	}

	describe(framing) {
		const count = `${framing.count.toLocaleString('en')} ${framing.count === 1 ? 'point' : 'points'}`;
		if (!this.units) return count;
		const { x, y, z } = framing.size;
		return `${count} · about ${formatLength(x)} × ${formatLength(y)} × ${formatLength(z)} ${this.units} (width × height × depth)`;
	}

	setPointSize(size) {
		this.points.material.size = size;
		this.sizeInput.value = String(size);
		this.sizeOutput.textContent = `${size} px`;
		this.requestRender();
	}

	wireControls() {
		this.controls.enabled = true;
		this.resetButton.disabled = false;
		this.sizeInput.disabled = false;
		this.resetButton.addEventListener('click', () => this.resetView());
		this.sizeInput.addEventListener('input', () => this.setPointSize(Number(this.sizeInput.value)));
		if (this.meshInput) {
			this.meshInput.disabled = false;
			this.meshInput.addEventListener('change', () => this.toggleMesh(this.meshInput.checked));
		}
		if (this.splatInput) {
			this.splatInput.disabled = false;
			this.splatInput.addEventListener('change', () => this.toggleSplats(this.splatInput.checked));
		}
		this.wireMeasuring();
	}

	// ------------------------------------------------------------------------------------------ measuring

	wireMeasuring() {
		this.measuring = false;
		this.picked = []; // up to two {index, position: Vector3} in the file's coordinates
		this.measureUnits = /^(metres?|meters?|m)$/i.test(this.units) ? 'metres' : 'relative units';
		this.raycaster = new THREE.Raycaster();
		this.createMeasureGraphics();

		this.measureButton.disabled = false;
		this.measureButton.addEventListener('click', () => this.setMeasuring(!this.measuring));

		// A click is a press and release of the primary button that barely moved: orbit drags do not count,
		// nor do pinches (a second pointer cancels the press).
		this.canvas.addEventListener('pointerdown', (event) => {
			if (!this.measuring || !event.isPrimary || event.button !== 0) {
				this.press = null;
				return;
			}
			this.press = { id: event.pointerId, x: event.clientX, y: event.clientY, moved: 0 };
		});
		this.canvas.addEventListener('pointermove', (event) => {
			const press = this.press;
			if (press && event.pointerId === press.id) {
				press.moved = Math.max(press.moved, Math.hypot(event.clientX - press.x, event.clientY - press.y));
			}
		});
		this.canvas.addEventListener('pointerup', (event) => {
			const press = this.press;
			this.press = null;
			if (!press || event.pointerId !== press.id || !this.measuring) return;
			const moved = Math.max(press.moved, Math.hypot(event.clientX - press.x, event.clientY - press.y));
			if (moved <= CLICK_SLOP) this.pickAt(event.clientX, event.clientY, event.pointerType);
		});
		this.canvas.addEventListener('pointercancel', () => {
			this.press = null;
		});
		this.element.addEventListener('keydown', (event) => {
			if (event.key !== 'Escape' || !this.measuring) return;
			event.preventDefault();
			if (this.picked.length) this.clearMeasurement();
			else this.setMeasuring(false);
		});
	}

	createMeasureGraphics() {
		// Drawn on top of everything (no depth test), at a fixed size in pixels, and never picked themselves.
		const overlay = { depthTest: false, depthWrite: false, transparent: true };
		const markerGeometry = new THREE.BufferGeometry();
		markerGeometry.setAttribute('position', new THREE.Float32BufferAttribute(new Float32Array(6), 3));
		const markerColours = new THREE.Color(MEASURE_COLOURS.a).toArray().concat(new THREE.Color(MEASURE_COLOURS.b).toArray());
		markerGeometry.setAttribute('color', new THREE.Float32BufferAttribute(markerColours, 3));
		const outline = new THREE.Points(markerGeometry, new THREE.PointsMaterial({
			size: 13, sizeAttenuation: false, color: MEASURE_COLOURS.outline, ...overlay,
		}));
		const markers = new THREE.Points(markerGeometry, new THREE.PointsMaterial({
			size: 9, sizeAttenuation: false, vertexColors: true, ...overlay,
		}));
		const lineGeometry = new THREE.BufferGeometry();
		lineGeometry.setAttribute('position', new THREE.Float32BufferAttribute(new Float32Array(6), 3));
		const line = new THREE.Line(lineGeometry, new THREE.LineBasicMaterial({ color: MEASURE_COLOURS.line, ...overlay }));
		line.renderOrder = 1;
		outline.renderOrder = 2;
		markers.renderOrder = 3;
		this.measureGroup = new THREE.Group();
		this.measureGroup.name = 'measurement';
		for (const object of [line, outline, markers]) {
			object.frustumCulled = false; // positions change; never culled by a stale bounding sphere
			this.measureGroup.add(object);
		}
		this.measureGroup.visible = false;
		this.measureObjects = { markerGeometry, lineGeometry, line };
		this.scene.add(this.measureGroup);
	}

	setMeasuring(on) {
		this.measuring = on;
		this.press = null;
		this.measureButton.setAttribute('aria-pressed', String(on));
		this.element.toggleAttribute('data-measuring', on);
		this.measureReadout.hidden = !on;
		this.clearMeasurement();
	}

	clearMeasurement() {
		this.picked = [];
		for (const name of ['measureA', 'measureB', 'measureDistance']) delete this.element.dataset[name];
		this.updateMeasureGraphics();
		if (this.measuring) this.setReadout('Click a point of the cloud to mark point A.');
	}

	setReadout(text) {
		this.measureReadout.textContent = text;
	}

	/**
	 * The drawn point under the cursor. The raycaster's threshold (world units, measured across the ray) is set so
	 * that it reaches a few pixels around the cursor even at the far end of the cloud; every candidate is then
	 * projected to the screen. A point whose square covers the cursor is what the eye sees there: the one nearest
	 * the camera wins. If none covers it (a gap between points), the nearest on screen within reach is taken.
	 */
	pickPoint(clientX, clientY, pointerType) {
		const rect = this.canvas.getBoundingClientRect();
		if (!(rect.width > 0 && rect.height > 0)) return null;
		const ndc = new THREE.Vector2(((clientX - rect.left) / rect.width) * 2 - 1, -((clientY - rect.top) / rect.height) * 2 + 1);
		const half = this.points.material.size / 2;
		const reach = Math.max(half + (PICK_SLACK[pointerType] ?? PICK_SLACK.mouse), 6);

		this.camera.updateMatrixWorld();
		const farthest = this.camera.position.distanceTo(this.framing.center) + this.framing.size.length() / 2;
		const worldPerPixel = 2 * farthest * Math.tan(THREE.MathUtils.degToRad(this.camera.fov) / 2) / rect.height;
		this.raycaster.params.Points.threshold = reach * worldPerPixel * 1.01;
		this.raycaster.near = this.camera.near;
		this.raycaster.far = this.camera.far;
		this.raycaster.setFromCamera(ndc, this.camera);
		const hits = this.raycaster.intersectObject(this.points, false);

		const position = this.points.geometry.getAttribute('position');
		const vertex = new THREE.Vector3();
		const onScreen = new THREE.Vector3();
		let covering = null, nearest = null;
		for (const hit of hits) {
			vertex.fromBufferAttribute(position, hit.index);
			onScreen.copy(vertex).project(this.camera);
			if (!(Math.abs(onScreen.z) <= 1)) continue; // outside the near/far planes: not drawn
			const dx = Math.abs(onScreen.x - ndc.x) * rect.width / 2, dy = Math.abs(onScreen.y - ndc.y) * rect.height / 2;
			const pixels = Math.hypot(dx, dy);
			if (pixels > reach) continue;
			const depth = onScreen.z;
			if (dx <= half + 0.5 && dy <= half + 0.5) {
				if (!covering || depth < covering.depth) covering = { index: hit.index, depth };
			} else if (!nearest || pixels < nearest.pixels || (pixels === nearest.pixels && depth < nearest.depth)) {
				nearest = { index: hit.index, depth, pixels };
			}
		}
		const best = covering || nearest;
		if (!best) return null;
		return { index: best.index, position: new THREE.Vector3().fromBufferAttribute(position, best.index) };
	}

	pickAt(clientX, clientY, pointerType) {
		const point = this.pickPoint(clientX, clientY, pointerType);
		if (!point) {
			this.setReadout(this.picked.length === 1
				? 'No point there. Click on the point cloud to mark point B.'
				: 'No point there. Click on the point cloud to mark point A.');
			return;
		}
		if (this.picked.length >= 2) this.clearMeasurement(); // a third click starts a new measurement
		this.picked.push(point);
		const coordinates = (p) => [p.x, p.y, p.z].map((value) => value.toFixed(6)).join(',');
		if (this.picked.length === 1) {
			this.element.dataset.measureA = coordinates(point.position);
			this.setReadout('Point A marked. Click a second point to mark point B.');
		} else {
			const [a, b] = this.picked.map((p) => p.position);
			const distance = a.distanceTo(b);
			this.element.dataset.measureB = coordinates(b);
			this.element.dataset.measureDistance = distance.toFixed(6);
			const note = this.measureUnits === 'metres' ? '' : ' (the depth has no real-world scale)';
			this.setReadout(`Distance: ${formatDistance(distance)} ${this.measureUnits}${note}`);
			this.element.dispatchEvent(new CustomEvent('viewer:measure', {
				bubbles: true, detail: { a: a.toArray(), b: b.toArray(), distance, units: this.measureUnits },
			}));
		}
		this.updateMeasureGraphics();
	}

	updateMeasureGraphics() {
		if (!this.measureGroup) return;
		const { markerGeometry, lineGeometry, line } = this.measureObjects;
		const markers = markerGeometry.getAttribute('position');
		this.picked.forEach((p, i) => markers.setXYZ(i, p.position.x, p.position.y, p.position.z));
		markers.needsUpdate = true;
		markerGeometry.setDrawRange(0, this.picked.length);
		if (this.picked.length === 2) {
			const ends = lineGeometry.getAttribute('position');
			this.picked.forEach((p, i) => ends.setXYZ(i, p.position.x, p.position.y, p.position.z));
			ends.needsUpdate = true;
		}
		line.visible = this.picked.length === 2;
		this.measureGroup.visible = this.picked.length > 0;
		this.requestRender();
	}

	async toggleMesh(show) {
		if (show && !this.mesh) {
			this.meshInput.disabled = true;
			this.element.dataset.meshState = 'loading';
			this.setStatus('Loading the mesh…');
			try {
				this.meshPromise ??= this.loadMesh();
				await this.meshPromise;
			} catch (error) {
				this.meshPromise = null; // allow another try
				if (this.disposed) return;
				const message = error instanceof LoadError ? error.message : 'The mesh file could not be read: it is damaged or not a glTF/GLB file.';
				this.meshInput.checked = false;
				this.meshInput.disabled = false;
				this.element.dataset.meshState = 'error';
				this.setStatus(`${message} The point cloud is still shown.`, 'error');
				this.element.dispatchEvent(new CustomEvent('viewer:mesh', { bubbles: true, detail: { state: 'error', message } }));
				return;
			}
			if (this.disposed) return;
			this.meshInput.disabled = false;
			show = this.meshInput.checked;
			this.element.dataset.meshState = 'ready';
			this.element.dispatchEvent(new CustomEvent('viewer:mesh', { bubbles: true, detail: { state: 'ready', triangles: this.triangles } }));
		}
		if (!this.mesh) return;
		if (show && this.splatInput) this.splatInput.checked = false;
		this.showChosen();
	}

	/** Draw what the toggles ask for: the splats, else the mesh, else the points (only one at a time). */
	showChosen() {
		const splats = Boolean(this.splats && this.splatInput?.checked);
		const mesh = Boolean(!splats && this.mesh && this.meshInput?.checked);
		if (this.splats) this.splats.visible = splats;
		if (this.mesh) this.mesh.visible = mesh;
		this.points.visible = !splats && !mesh;
		this.sizeInput.disabled = splats || mesh; // point size means nothing for the mesh or the splats
		if (splats) this.setStatus(`Splats: ${this.splatCount.toLocaleString('en')} Gaussians`);
		else if (mesh) this.setStatus(`Mesh: ${this.triangles.toLocaleString('en')} triangles`);
		else this.setStatus(this.summary);
		this.requestRender();
	}

	async toggleSplats(show) {
		if (show && !this.splats) {
			this.splatInput.disabled = true;
			this.element.dataset.splatState = 'loading';
			this.setStatus('Loading the splats…');
			try {
				this.splatPromise ??= this.loadSplats();
				await this.splatPromise;
			} catch (error) {
				this.splatPromise = null; // allow another try
				if (this.disposed) return;
				const message = error instanceof LoadError ? error.message
					: 'The splats could not be shown: the file is damaged, or this browser cannot run the splat renderer.';
				this.splatInput.checked = false;
				this.splatInput.disabled = false;
				this.element.dataset.splatState = 'error';
				this.setStatus(`${message} The ${this.meshInput?.checked && this.mesh ? 'mesh' : 'point cloud'} is still shown.`, 'error');
				this.element.dispatchEvent(new CustomEvent('viewer:splats', { bubbles: true, detail: { state: 'error', message } }));
				return;
			}
			if (this.disposed) return;
			this.splatInput.disabled = false;
			this.element.dataset.splatState = 'ready';
			this.element.dispatchEvent(new CustomEvent('viewer:splats', { bubbles: true, detail: { state: 'ready', splats: this.splatCount } }));
		}
		if (!this.splats) return;
		if (this.splatInput.checked && this.meshInput) this.meshInput.checked = false;
		this.showChosen();
	}

	/** Spark is imported only now: it compiles WebAssembly as it loads, which only the job page's CSP allows. */
	async loadSplats() {
		// Spark waits forever when the page's CSP refuses WebAssembly, so ask first with the smallest module there is.
		try {
			new WebAssembly.Module(new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
		} catch {
			throw new LoadError('The splats cannot be shown here: this page does not allow the WebAssembly that the splat renderer needs. Download the .splat.ply file to open it in a splat viewer.');
		}
		const [{ SparkRenderer, SplatMesh }, bytes] = await Promise.all([
			import('../vendor/spark/spark.module.min.js'),
			fetchBytes(this.splatUrl, 'splats'),
		]);
		if (this.disposed) return;
		// Spark sorts the splats for the current view in a worker; onDirty asks for a frame when a new order is ready.
		const spark = new SparkRenderer({ renderer: this.renderer, onDirty: () => this.requestRender() });
		this.scene.add(spark);
		const splats = new SplatMesh({ fileBytes: bytes, fileType: 'ply' });
		await splats.initialized;
		if (this.disposed) return;
		this.splatCount = splats.splats?.getNumSplats?.() ?? splats.packedSplats?.numSplats ?? 0;
		splats.visible = false;
		this.scene.add(splats);
		this.spark = spark;
		this.splats = splats;
	}

	async loadMesh() {
		const [{ GLTFLoader }, bytes] = await Promise.all([
			import('../vendor/three/addons/loaders/GLTFLoader.js'),
			fetchBytes(this.meshUrl, 'mesh'),
		]);
		const loader = new GLTFLoader();
		// Embedded textures are handed to the image loader as blob: URLs. The default ImageBitmapLoader fetch()es
		// them, which a strict CSP (connect-src 'self') blocks; an <img> only needs img-src blob:.
		loader.register((parser) => {
			parser.textureLoader = new THREE.TextureLoader(parser.options.manager);
			parser.textureLoader.setCrossOrigin(parser.options.crossOrigin);
			return { name: 'viewer_image_textures' };
		});
		const base = new URL(this.meshUrl, document.baseURI);
		const gltf = await loader.parseAsync(bytes, new URL('.', base).href);
		if (this.disposed) return;

		let triangles = 0;
		gltf.scene.traverse((object) => {
			if (!object.isMesh) return;
			const geometry = object.geometry;
			triangles += Math.floor((geometry.index ? geometry.index.count : geometry.getAttribute('position').count) / 3);
			// Show the photo's colours as they are: no lights, no shading.
			const unlit = (material) => {
				if (material.isMeshBasicMaterial) {
					material.side = THREE.DoubleSide;
					return material;
				}
				const basic = new THREE.MeshBasicMaterial({
					color: material.color, map: material.map || null, vertexColors: material.vertexColors,
					transparent: material.transparent, opacity: material.opacity, alphaTest: material.alphaTest,
					side: THREE.DoubleSide,
				});
				material.dispose();
				return basic;
			};
			object.material = Array.isArray(object.material) ? object.material.map(unlit) : unlit(object.material);
		});
		this.triangles = triangles;
		this.mesh = gltf.scene;
		this.mesh.visible = false;
		this.scene.add(this.mesh);
	}

	requestRender() {
		if (this.frame || this.disposed) return;
		this.frame = requestAnimationFrame(() => {
			this.frame = 0;
			this.render();
		});
	}

	render() {
		if (this.disposed || !this.renderer) return;
		this.renderer.render(this.scene, this.camera);
	}

	dispose() {
		this.disposed = true;
		if (this.frame) cancelAnimationFrame(this.frame);
		this.resizeObserver?.disconnect();
		this.controls?.dispose();
		this.splats?.dispose();
		this.spark?.dispose?.();
		this.scene?.traverse((object) => {
			object.geometry?.dispose();
			const materials = Array.isArray(object.material) ? object.material : object.material ? [object.material] : [];
			for (const material of materials) {
				material.map?.dispose();
				material.dispose();
			}
		});
		if (this.renderer) {
			this.renderer.dispose();
			this.renderer.forceContextLoss();
		}
	}
}

// ---------------------------------------------------------------------------------------------- set-up

export const { mount: initViewer, mountAll: initAll } = mounter({
	selector: '[data-viewer]', state: 'viewerState', create: (element) => new Viewer(element), what: '3D view',
});
