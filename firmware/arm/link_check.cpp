// An image that links every object of the portable libraries (core, net, W5500 driver) whole,
// without section garbage collection: any symbol they need and the target lacks (heap,
// exceptions, a libm function) fails this link, and the image's size bounds their flash cost. It
// runs none of them: the node firmware does that.
#include "nmcm/port/port.h"

int main() {
  nmcm::port::init();
  nmcm::port::log("link check: nothing to run");
  return 0;
}
