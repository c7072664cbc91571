import * as THREE from '../vendor/three/build/three.module.min.js';

/** Bounds of a geometry's finite points ({box, center, size, count}), or null when there are none: the viewer and
 * the 4D player frame their first view by it. */
export function finiteBounds(geometry) {
	const position = geometry.getAttribute('position');
	const box = new THREE.Box3();
	const point = new THREE.Vector3();
	let count = 0;
	for (let i = 0; i < position.count; i++) {
		point.fromBufferAttribute(position, i);
		if (!Number.isFinite(point.x) || !Number.isFinite(point.y) || !Number.isFinite(point.z)) continue;
		box.expandByPoint(point);
		count++;
	}
	if (count === 0) return null;
	return { box, center: box.getCenter(new THREE.Vector3()), size: box.getSize(new THREE.Vector3()), count };
}
