'use strict';
// The hot function of profile-overhead.js (gates) and trace-cost.js (traces): small and
// cheap, so that what a wrapper adds to each call is what gets measured. bench/apps/hot-app.js
// calls it through this module's exports object, the way an app calls a library, so a
// wrapper installed on `exports.small` (`<this file>:small`) is what the app calls.
exports.small = function small(x) {
  return (x * 31 + 7) & 1023;
};
