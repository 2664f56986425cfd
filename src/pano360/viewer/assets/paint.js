// pano360 paint mode (pano360's own code, MIT like the project): paint a mask in the 360° view.
//
// The brush is a circle in view space (its radius in screen pixels); each dab marks every pixel of
// an equirect mask (the panorama's size) whose direction lies within the brush's angular radius of
// the dab's direction. The mask therefore follows the sphere: a stroke across the left/right seam
// marks both edges, a dab on a pole marks whole rows, and turning the view shows the painted region
// where it was painted. window.pano360Mask() returns it as a black/white PNG data URL (white = paint).
(function () {
  var viewer = window.pano360Viewer, box = document.getElementById('panorama');
  var spec = window.pano360PaintSpec;  // {width, height, haov, vaov, vOffset} (degrees)
  var W = spec.width, H = spec.height, rad = Math.PI / 180;
  var haov = spec.haov * rad, vaov = spec.vaov * rad, vOff = spec.vOffset * rad, wraps = spec.haov >= 360;
  var mask = new Uint8Array(W * H), painted = 0, mode = 'look', brush = 24, dirty = true, lastPose = '';

  var overlay = document.createElement('canvas');
  overlay.id = 'pano360-paint';
  overlay.style.cssText = 'position:fixed;left:0;top:0;width:100%;height:100%;z-index:2;pointer-events:none;' +
    'image-rendering:pixelated';
  document.body.appendChild(overlay);
  var cursor = document.createElement('div');
  cursor.style.cssText = 'position:fixed;z-index:3;pointer-events:none;border:2px solid #fff;border-radius:50%;' +
    'box-shadow:0 0 0 1px #000;display:none';
  document.body.appendChild(cursor);
  var bar = document.createElement('div');
  bar.id = 'pano360-paintbar';
  bar.style.cssText = 'position:fixed;right:8px;top:8px;z-index:4;background:rgba(0,0,0,.6);color:#fff;' +
    'font:13px sans-serif;padding:6px 8px;border-radius:6px;display:flex;gap:6px;align-items:center';
  bar.innerHTML = '<button data-mode="look">Look</button><button data-mode="paint">Paint</button>' +
    '<button data-mode="erase">Erase</button><label>Brush <input id="pano360-brush" type="range" min="4" ' +
    'max="120" value="24" style="width:80px"></label><button id="pano360-clear">Clear</button>' +
    '<span id="pano360-coverage">0%</span>';
  document.body.appendChild(bar);

  function setMode(next) {
    mode = next;
    overlay.style.pointerEvents = mode === 'look' ? 'none' : 'auto';
    overlay.style.cursor = mode === 'look' ? '' : 'none';
    Array.prototype.forEach.call(bar.querySelectorAll('button[data-mode]'), function (b) {
      b.style.fontWeight = b.getAttribute('data-mode') === mode ? 'bold' : 'normal';
    });
    document.body.setAttribute('data-paint-mode', mode);
  }
  bar.addEventListener('click', function (event) {
    var m = event.target.getAttribute && event.target.getAttribute('data-mode');
    if (m) setMode(m);
  });
  document.getElementById('pano360-brush').addEventListener('input', function (e) { brush = +e.target.value; });
  document.getElementById('pano360-clear').addEventListener('click', function () {
    mask.fill(0); painted = 0; dirty = true; report();
  });

  // Screen point (CSS px in the view) -> [latitude, longitude] in radians: Pannellum's own projection
  // (rectilinear, no roll), so the brush lands where the pixel under the cursor is.
  function toSphere(x, y) {
    var w = box.clientWidth, h = box.clientHeight;
    var a = x / w * 2 - 1, c = (1 - y / h * 2) * h / w;
    var d = 1 / Math.tan(viewer.getHfov() * rad / 2), p = viewer.getPitch() * rad;
    var e = Math.sin(p), g = Math.cos(p), f = d * g - c * e, n = Math.sqrt(a * a + f * f);
    return [Math.atan((c * g + d * e) / n), Math.atan2(a / n, f / n) + viewer.getYaw() * rad];
  }
  function latOf(y) { return vOff + vaov * (0.5 - (y + 0.5) / H); }
  function xOf(lon) { return (lon / haov + 0.5) * W - 0.5; }
  function index(lat, lon) {
    lon = ((lon + Math.PI) % (2 * Math.PI) + 2 * Math.PI) % (2 * Math.PI) - Math.PI;
    var x = Math.round(xOf(lon)), y = Math.round((0.5 - (lat - vOff) / vaov) * H - 0.5);
    if (y < 0 || y >= H) return -1;
    if (x < 0 || x >= W) { if (!wraps) return -1; x = ((x % W) + W) % W; }
    return y * W + x;
  }
  function setPixel(i, value) {
    if (mask[i] !== value) { painted += value ? 1 : -1; mask[i] = value; }
  }
  // Every mask pixel within angular radius r of (lat0, lon0): per row, the longitudes where
  // cos(dist) = sin(lat) sin(lat0) + cos(lat) cos(lat0) cos(dlon) >= cos(r).
  function dab(lat0, lon0, r, value) {
    var cr = Math.cos(r), s0 = Math.sin(lat0), c0 = Math.cos(lat0);
    for (var y = 0; y < H; y++) {
      var lat = latOf(y);
      if (Math.abs(lat - lat0) > r) continue;
      var num = cr - Math.sin(lat) * s0, den = Math.cos(lat) * c0, half;
      if (den < 1e-9) { if (num > 0) continue; half = Math.PI; }
      else { var cd = num / den; if (cd > 1) continue; half = cd <= -1 ? Math.PI : Math.acos(cd); }
      var row = y * W;
      if (half >= Math.PI - 1e-9) { for (var x = 0; x < W; x++) setPixel(row + x, value); continue; }
      var x0 = Math.ceil(xOf(lon0 - half)), x1 = Math.floor(xOf(lon0 + half));
      for (var k = x0; k <= x1; k++) {
        var xx = k;
        if (xx < 0 || xx >= W) { if (!wraps) continue; xx = ((xx % W) + W) % W; }
        setPixel(row + xx, value);
      }
      if (x0 > x1) {  // narrower than one pixel: the nearest one
        var i = index(lat, lon0);
        if (i >= 0) setPixel(i, value);
      }
    }
    // the nearest pixel of the centre, however small the brush
    var centre = index(lat0, lon0);
    if (centre >= 0) setPixel(centre, value);
  }
  function brushRadius() {  // screen radius -> angle at the centre of the view
    var w = box.clientWidth;
    return Math.atan(brush * 2 * Math.tan(viewer.getHfov() * rad / 2) / w);
  }
  function paintAt(x, y) {
    var s = toSphere(x, y);
    dab(s[0], s[1], brushRadius(), mode === 'erase' ? 0 : 1);
    dirty = true;
  }
  var last = null;
  function point(event) {
    var r = box.getBoundingClientRect();
    return [event.clientX - r.left, event.clientY - r.top];
  }
  function stroke(p) {
    if (last) {  // dabs every third of the brush along the segment
      var dx = p[0] - last[0], dy = p[1] - last[1], n = Math.ceil(Math.sqrt(dx * dx + dy * dy) / Math.max(1, brush / 3));
      for (var i = 1; i <= n; i++) paintAt(last[0] + dx * i / n, last[1] + dy * i / n);
    } else {
      paintAt(p[0], p[1]);
    }
    last = p;
    report();
  }
  overlay.addEventListener('pointerdown', function (event) {
    if (mode === 'look') return;
    event.preventDefault();
    try { overlay.setPointerCapture(event.pointerId); } catch (e) { /* synthetic events */ }
    last = null;
    stroke(point(event));
  });
  overlay.addEventListener('pointermove', function (event) {
    var p = point(event);
    cursor.style.display = mode === 'look' ? 'none' : 'block';
    cursor.style.width = cursor.style.height = (2 * brush) + 'px';
    cursor.style.left = (event.clientX - brush - 2) + 'px';
    cursor.style.top = (event.clientY - brush - 2) + 'px';
    if (mode !== 'look' && event.buttons & 1 && last) stroke(p);
  });
  function end() { last = null; }
  overlay.addEventListener('pointerup', end);
  overlay.addEventListener('pointercancel', end);
  overlay.addEventListener('pointerleave', function () { cursor.style.display = 'none'; });
  overlay.addEventListener('wheel', function (event) {  // zoom keeps working while painting
    event.preventDefault();
    viewer.setHfov(viewer.getHfov() + (event.deltaY > 0 ? 5 : -5), false);
  }, {passive: false});

  function report() {
    var share = painted / (W * H);
    document.getElementById('pano360-coverage').textContent = (100 * share).toFixed(1) + '%';
    document.body.setAttribute('data-painted', String(painted));
  }

  // The painted region drawn over the view, resampled from the mask every time the view or the mask
  // changes (a coarse grid of 4 px cells: enough to see where one paints).
  var CELL = 4;
  function render() {
    var pose = [viewer.getYaw(), viewer.getPitch(), viewer.getHfov(), box.clientWidth, box.clientHeight].join();
    if (dirty || pose !== lastPose) {
      dirty = false; lastPose = pose;
      var w = Math.max(1, Math.ceil(box.clientWidth / CELL)), h = Math.max(1, Math.ceil(box.clientHeight / CELL));
      if (overlay.width !== w || overlay.height !== h) { overlay.width = w; overlay.height = h; }
      var ctx = overlay.getContext('2d'), img = ctx.createImageData(w, h), data = img.data;
      if (painted) {
        for (var y = 0; y < h; y++) {
          for (var x = 0; x < w; x++) {
            var s = toSphere((x + 0.5) * CELL, (y + 0.5) * CELL), i = index(s[0], s[1]);
            if (i >= 0 && mask[i]) {
              var o = 4 * (y * w + x);
              data[o] = 255; data[o + 1] = 40; data[o + 2] = 120; data[o + 3] = 110;
            }
          }
        }
      }
      ctx.putImageData(img, 0, 0);
    }
    window.requestAnimationFrame(render);
  }

  window.pano360Mask = function () {
    if (!painted) return '';
    var canvas = document.createElement('canvas');
    canvas.width = W; canvas.height = H;
    var ctx = canvas.getContext('2d'), img = ctx.createImageData(W, H), data = img.data;
    for (var i = 0; i < W * H; i++) {
      var v = mask[i] ? 255 : 0;
      data[4 * i] = data[4 * i + 1] = data[4 * i + 2] = v; data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return canvas.toDataURL('image/png');
  };
  window.pano360PaintMode = setMode;
  window.pano360PaintedPixels = function () { return painted; };
  setMode('look');
  report();
  window.requestAnimationFrame(render);
})();
