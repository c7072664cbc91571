/**
 * How a kind of 3D widget (the viewer, the 4D player) comes onto the page's elements and goes: every element that
 * matches `selector` gets one widget, once (an element whose `state` data attribute is set already has one); a widget
 * whose element left the page is disposed of, so its WebGL context is let go. Mounted on import and again whenever
 * the page gains elements (app.js swaps results in).
 *
 * A widget is made by `create(element)` and has start() (a promise), fail(message) and dispose().
 */
export function mounter({ selector, state, create, what }) {
	const mounted = new Map(); // element -> widget

	/** Set up one element (idempotent). Returns the widget, or undefined when it was already set up. */
	function mount(element) {
		if (mounted.has(element) || element.dataset[state]) return undefined;
		const widget = create(element);
		mounted.set(element, widget);
		widget.start().catch((error) => {
			// Should not happen; keep the page honest rather than silently blank.
			console.error(`${what}:`, error);
			widget.fail(`The ${what} stopped because of an unexpected problem. Reload the page to try again.`);
		});
		return widget;
	}

	function mountAll(root = document) {
		for (const element of root.querySelectorAll(selector)) mount(element);
	}

	function sweep() {
		for (const [element, widget] of mounted) {
			if (!element.isConnected) {
				widget.dispose();
				mounted.delete(element);
			}
		}
	}

	mountAll();
	new MutationObserver((records) => {
		if (records.some((record) => record.addedNodes.length)) mountAll();
		sweep();
	}).observe(document.documentElement, { childList: true, subtree: true });
	return { mount, mountAll };
}
