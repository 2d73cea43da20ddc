# CMake toolchain file: arm-none-eabi-gcc (GNU Arm Embedded, newlib-nano) for nmcm's Cortex-M targets.
#
#   cmake -S firmware/arm -B build/arm-f413 -DCMAKE_TOOLCHAIN_FILE=firmware/cmake/arm-none-eabi.cmake \
#         -DNMCM_MCU=stm32f413zh
#
# NMCM_MCU picks the CPU flags (FACTS.md, "The two MCUs"):
#   stm32f413zh, mps2-an386   Cortex-M4F, single-precision FPU (fpv4-sp-d16)
#   stm32h7a3zi, mps2-an500   Cortex-M7, double-precision FPU (fpv5-d16)
# The mps2-* names are QEMU's boards standing in for the same cores (`qemu` target).
#
# Sets for the including project: NMCM_MCU, NMCM_CPU (cortex-m4 | cortex-m7), NMCM_CPU_FLAGS (list),
# CMAKE_OBJCOPY, CMAKE_SIZE.

set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

# The toolchain file is read again inside every try_compile project: forward the MCU choice.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES NMCM_MCU)

set(_nmcm_m4 -mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb)
set(_nmcm_m7 -mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard -mthumb)
if(NMCM_MCU STREQUAL "stm32f413zh" OR NMCM_MCU STREQUAL "mps2-an386")
  set(NMCM_CPU cortex-m4)
  set(NMCM_CPU_FLAGS ${_nmcm_m4})
elseif(NMCM_MCU STREQUAL "stm32h7a3zi" OR NMCM_MCU STREQUAL "mps2-an500")
  set(NMCM_CPU cortex-m7)
  set(NMCM_CPU_FLAGS ${_nmcm_m7})
else()
  message(FATAL_ERROR "NMCM_MCU='${NMCM_MCU}': pass -DNMCM_MCU=stm32f413zh|stm32h7a3zi|mps2-an386|"
                      "mps2-an500 together with this toolchain file")
endif()

# Find the compiler up front so that a missing toolchain says what to install, instead of CMake's
# generic "compiler not found".
find_program(NMCM_ARM_GCC arm-none-eabi-gcc)
if(NOT NMCM_ARM_GCC)
  message(FATAL_ERROR "arm-none-eabi-gcc not found: install gcc-arm-none-eabi, "
                      "libnewlib-arm-none-eabi and libstdc++-arm-none-eabi-newlib (`make setup`)")
endif()
get_filename_component(_nmcm_bin "${NMCM_ARM_GCC}" DIRECTORY)
set(CMAKE_C_COMPILER "${_nmcm_bin}/arm-none-eabi-gcc")
set(CMAKE_CXX_COMPILER "${_nmcm_bin}/arm-none-eabi-g++")
set(CMAKE_ASM_COMPILER "${_nmcm_bin}/arm-none-eabi-gcc")
set(CMAKE_OBJCOPY "${_nmcm_bin}/arm-none-eabi-objcopy" CACHE FILEPATH "objcopy for the target")
set(CMAKE_SIZE "${_nmcm_bin}/arm-none-eabi-size" CACHE FILEPATH "size for the target")

# A bare-metal executable cannot link without a startup file and a linker script (the compiler
# check would fail on _exit): let CMake's checks build static libraries instead.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
# Plain CMAKE_EXECUTABLE_SUFFIX is ignored for a Generic system; the per-language ones are not.
set(CMAKE_EXECUTABLE_SUFFIX_C .elf)
set(CMAKE_EXECUTABLE_SUFFIX_CXX .elf)
set(CMAKE_EXECUTABLE_SUFFIX_ASM .elf)

string(JOIN " " _nmcm_cpu ${NMCM_CPU_FLAGS})
# Sections per function and object so that --gc-sections drops what the firmware never calls.
# -fno-use-cxa-atexit: a static object with a destructor then registers through atexit() rather
# than __cxa_atexit, which needs __dso_handle from crtbegin.o (the ports link -nostartfiles).
# -fcallgraph-info=su: beside each object, its functions' stack frames and direct calls (a .ci
# file), from which nmcm computes the image's worst stack depth (nmcm_deploy/build/stack.py).
set(_nmcm_common "${_nmcm_cpu} -ffunction-sections -fdata-sections -fcallgraph-info=su")
set(CMAKE_C_FLAGS_INIT "${_nmcm_common}")
set(CMAKE_CXX_FLAGS_INIT
    "${_nmcm_common} -fno-exceptions -fno-rtti -fno-threadsafe-statics -fno-use-cxa-atexit")
set(CMAKE_ASM_FLAGS_INIT "${_nmcm_cpu} -x assembler-with-cpp")
set(CMAKE_EXE_LINKER_FLAGS_INIT "${_nmcm_cpu} --specs=nano.specs -Wl,--gc-sections")

# Never search the host for target libraries or headers.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
