// pano360 depth viewer: a panorama mesh displaced by depth, rendered with WebGL2 (no library).
// Part of pano360 (Apache-2.0). Inputs, set by the page before this script runs:
//   window.PANO360_DEPTH = {positions, uvs, indices (base64 Float32/Float32/Uint32, little-endian),
//                           texture (base64 image), mime, free: {rows, cols, data (base64 Float32)},
//                           hfov, parallax, step, limit}
// World frame: right-handed, Y up, -Z forward (glTF), the camera starts at the origin.
// Controls: drag to look around, wheel to zoom, W/A/S/D or arrow keys to walk, Q/E down/up,
// R to return to the centre; moving the pointer without dragging shifts the eye a little (parallax).
(function () {
  'use strict';
  var cfg = window.PANO360_DEPTH;
  var canvas = document.getElementById('depth-canvas');
  var gl = canvas.getContext('webgl2', {antialias: true, preserveDrawingBuffer: true});
  function fail(msg) { document.body.setAttribute('data-pano-error', msg); }
  if (!gl) { fail('WebGL2 is not available in this browser'); return; }

  function bytes(b64) {
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  var free = new Float32Array(bytes(cfg.free.data).buffer);

  // Binary glTF 2.0: 12-byte header, a JSON chunk, a BIN chunk (glTF spec, "GLB File Format").
  function parseGlb(data) {
    var view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (view.getUint32(0, true) !== 0x46546C67 || view.getUint32(4, true) !== 2) throw new Error('not a glTF 2.0 binary');
    var jsonLength = view.getUint32(12, true);
    var json = JSON.parse(new TextDecoder().decode(data.subarray(20, 20 + jsonLength)));
    var binStart = 20 + jsonLength + 8, bin = data.subarray(binStart, binStart + view.getUint32(20 + jsonLength, true));
    function viewBytes(index) {
      var bv = json.bufferViews[index], start = bv.byteOffset || 0;
      return bin.slice(start, start + bv.byteLength);
    }
    var sizes = {SCALAR: 1, VEC2: 2, VEC3: 3};
    function accessor(index) {
      var a = json.accessors[index], raw = viewBytes(a.bufferView), offset = a.byteOffset || 0;
      var n = a.count * sizes[a.type];
      var copy = raw.buffer.slice(raw.byteOffset + offset, raw.byteOffset + offset +
        n * (a.componentType === 5123 ? 2 : 4));
      if (a.componentType === 5126) return new Float32Array(copy);
      if (a.componentType === 5125) return new Uint32Array(copy);
      if (a.componentType === 5123) return new Uint32Array(new Uint16Array(copy));
      throw new Error('unsupported accessor component type ' + a.componentType);
    }
    var primitive = json.meshes[0].primitives[0];
    var material = json.materials[primitive.material];
    var image = json.images[json.textures[material.pbrMetallicRoughness.baseColorTexture.index].source];
    return {positions: accessor(primitive.attributes.POSITION), uvs: accessor(primitive.attributes.TEXCOORD_0),
            indices: accessor(primitive.indices), image: viewBytes(image.bufferView), mime: image.mimeType};
  }
  var mesh;
  try { mesh = parseGlb(bytes(cfg.glb)); } catch (error) { fail('cannot read the mesh: ' + error.message); return; }
  var positions = mesh.positions, uvs = mesh.uvs, indices = mesh.indices;

  var vs = '#version 300 es\nin vec3 p; in vec2 t; uniform mat4 m; out vec2 v;\n' +
    'void main() { v = t; gl_Position = m * vec4(p, 1.0); }';
  var fs = '#version 300 es\nprecision highp float; in vec2 v; uniform sampler2D s; out vec4 c;\n' +
    'void main() { c = vec4(texture(s, v).rgb, 1.0); }';  // glTF texture coordinates; u > 1 at the seam: REPEAT
  function shader(type, src) {
    var sh = gl.createShader(type); gl.shaderSource(sh, src); gl.compileShader(sh);
    if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(sh));
    return sh;
  }
  var prog = gl.createProgram();
  gl.attachShader(prog, shader(gl.VERTEX_SHADER, vs));
  gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, fs));
  gl.linkProgram(prog);
  gl.useProgram(prog);
  function buffer(target, data) {
    var b = gl.createBuffer(); gl.bindBuffer(target, b); gl.bufferData(target, data, gl.STATIC_DRAW); return b;
  }
  var vao = gl.createVertexArray(); gl.bindVertexArray(vao);
  buffer(gl.ARRAY_BUFFER, positions);
  var lp = gl.getAttribLocation(prog, 'p'); gl.enableVertexAttribArray(lp);
  gl.vertexAttribPointer(lp, 3, gl.FLOAT, false, 0, 0);
  buffer(gl.ARRAY_BUFFER, uvs);
  var lt = gl.getAttribLocation(prog, 't'); gl.enableVertexAttribArray(lt);
  gl.vertexAttribPointer(lt, 2, gl.FLOAT, false, 0, 0);
  buffer(gl.ELEMENT_ARRAY_BUFFER, indices);
  var uM = gl.getUniformLocation(prog, 'm');

  // Camera state: position (world), yaw (right positive), pitch (up positive), horizontal FoV, degrees.
  var state = {x: 0, y: 0, z: 0, yaw: cfg.yaw || 0, pitch: cfg.pitch || 0, hfov: cfg.hfov || 90, px: 0, py: 0};
  var rad = Math.PI / 180, textureReady = false;

  // Free space: the eye may go where it stays `limit` of the way to the surface in its own direction.
  function surfaceDistance(dx, dy, dz) {
    var n = Math.hypot(dx, dy, dz); if (n < 1e-9) return Infinity;
    var lon = Math.atan2(dx, -dz), lat = Math.asin(dy / n);
    var col = Math.floor((lon / (2 * Math.PI) + 0.5) * cfg.free.cols) % cfg.free.cols;
    var row = Math.min(cfg.free.rows - 1, Math.max(0, Math.floor((0.5 - lat / Math.PI) * cfg.free.rows)));
    return free[row * cfg.free.cols + (col + cfg.free.cols) % cfg.free.cols];
  }
  function allowed(x, y, z) {
    var n = Math.hypot(x, y, z);
    return n === 0 || n <= cfg.limit * surfaceDistance(x, y, z);
  }

  function matrix() {
    var w = canvas.width, h = canvas.height;
    var f = 1 / Math.tan(state.hfov * rad / 2), aspect = w / h, near = cfg.near, far = cfg.far;
    var cy = Math.cos(state.yaw * rad), sy = Math.sin(state.yaw * rad);
    var cp = Math.cos(state.pitch * rad), sp = Math.sin(state.pitch * rad);
    // camera axes in the world: forward (yaw right, pitch up from -Z), right, up
    var fw = [sy * cp, sp, -cy * cp], rt = [cy, 0, sy], up = [-sy * sp, cp, cy * sp];
    var ex = state.x + cfg.parallax * (state.px * rt[0] + state.py * up[0]);
    var ey = state.y + cfg.parallax * (state.px * rt[1] + state.py * up[1]);
    var ez = state.z + cfg.parallax * (state.px * rt[2] + state.py * up[2]);
    var tx = -(rt[0] * ex + rt[1] * ey + rt[2] * ez);
    var ty = -(up[0] * ex + up[1] * ey + up[2] * ez);
    var tz = (fw[0] * ex + fw[1] * ey + fw[2] * ez);
    // view (rows: right, up, -forward) then perspective with horizontal focal f; column-major output
    var a = f, b = f * aspect, c = -(far + near) / (far - near), d = -2 * far * near / (far - near);
    var V = [rt[0], rt[1], rt[2], tx, up[0], up[1], up[2], ty, -fw[0], -fw[1], -fw[2], tz];
    var m = new Float32Array(16);
    for (var col = 0; col < 4; col++) {
      m[col * 4 + 0] = a * V[col];
      m[col * 4 + 1] = b * V[4 + col];
      m[col * 4 + 2] = c * V[8 + col] + (col === 3 ? d : 0);
      m[col * 4 + 3] = -V[8 + col];
    }
    return m;
  }

  function render() {
    var w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(0, 0, 0, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!textureReady) return;
    gl.enable(gl.DEPTH_TEST);
    gl.disable(gl.CULL_FACE);
    gl.uniformMatrix4fv(uM, false, matrix());
    gl.drawElements(gl.TRIANGLES, indices.length, gl.UNSIGNED_INT, 0);
  }
  var pending = false;
  function request() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; render(); }); } }

  function move(dx, dy, dz) {
    var nx = state.x + dx, ny = state.y + dy, nz = state.z + dz;
    if (allowed(nx, ny, nz)) { state.x = nx; state.y = ny; state.z = nz; request(); return true; }
    return false;
  }

  var tex = gl.createTexture();
  var img = new Image();
  img.onload = function () {
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, img);
    gl.generateMipmap(gl.TEXTURE_2D);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.REPEAT);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR_MIPMAP_LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    textureReady = true;
    render();
    document.body.setAttribute('data-pano-loaded', '1');
  };
  img.onerror = function () { fail('the panorama texture could not be decoded'); };
  img.src = URL.createObjectURL(new Blob([mesh.image], {type: mesh.mime}));

  var drag = null;
  canvas.addEventListener('pointerdown', function (e) { drag = [e.clientX, e.clientY, state.yaw, state.pitch]; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener('pointerup', function () { drag = null; });
  canvas.addEventListener('pointermove', function (e) {
    if (drag) {
      var k = state.hfov / canvas.clientWidth;
      state.yaw = drag[2] - (e.clientX - drag[0]) * k;
      state.pitch = Math.max(-89.9, Math.min(89.9, drag[3] + (e.clientY - drag[1]) * k));
    } else {
      state.px = 2 * e.clientX / canvas.clientWidth - 1; state.py = 1 - 2 * e.clientY / canvas.clientHeight;
    }
    request();
  });
  canvas.addEventListener('wheel', function (e) {
    e.preventDefault(); state.hfov = Math.max(20, Math.min(140, state.hfov * Math.exp(e.deltaY * 0.001))); request();
  }, {passive: false});
  window.addEventListener('keydown', function (e) {
    var s = cfg.step, cy = Math.cos(state.yaw * rad), sy = Math.sin(state.yaw * rad);
    var k = e.key.toLowerCase();
    if (k === 'w' || k === 'arrowup') move(sy * s, 0, -cy * s);
    else if (k === 's' || k === 'arrowdown') move(-sy * s, 0, cy * s);
    else if (k === 'd' || k === 'arrowright') move(cy * s, 0, sy * s);
    else if (k === 'a' || k === 'arrowleft') move(-cy * s, 0, -sy * s);
    else if (k === 'e') move(0, s, 0);
    else if (k === 'q') move(0, -s, 0);
    else if (k === 'r') { state.x = state.y = state.z = 0; request(); }
  });
  window.addEventListener('resize', request);

  window.pano360Depth = {
    // pose in the world frame; returns false (and does not move) outside the free space
    setPose: function (p) {
      var nx = p.x !== undefined ? p.x : state.x, ny = p.y !== undefined ? p.y : state.y;
      var nz = p.z !== undefined ? p.z : state.z;
      if (!allowed(nx, ny, nz)) return false;
      state.x = nx; state.y = ny; state.z = nz;
      ['yaw', 'pitch', 'hfov', 'px', 'py'].forEach(function (key) { if (p[key] !== undefined) state[key] = p[key]; });
      render();
      return true;
    },
    pose: function () { return JSON.parse(JSON.stringify(state)); },
    move: move,
    render: render,
    surfaceDistance: surfaceDistance
  };
})();
