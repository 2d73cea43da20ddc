# CMake API of nmcm's ARM builds (used by firmware/arm/CMakeLists.txt and the port directories).
#
# nmcm_add_port(<target> SOURCES <files...> LINKER_SCRIPT <file> [DEFINITIONS <defs...>])
#   A board port as one static library: the board's sources plus the Cortex-M startup, fault
#   handlers and SysTick shared by every ARM port (NMCM_CORTEX_M_SOURCES), compiled once for this
#   board. Linking the library into an executable brings the linker script, -nostartfiles and the
#   vector table with it; the port's headers (port.h, ports/stm32/include) become visible.
#
# nmcm_add_nucleo_port(<board>)
#   A Nucleo board's port library (nmcm_port_<board>, see nmcm_port_target): the board's board.cpp
#   and memory.ld in ports/<board>/, with what both Nucleo boards share (ports/stm32/nucleo.cpp).
#   The W5500 wiring defaults to the board profile's; NMCM_W5500_DEFINITIONS (NMCM_W5500_SPI, _CS,
#   _RESET, _SPI_MAX_HZ) override it (ports/stm32/include/nmcm/port/stm32_w5500_pins.h).
#
# nmcm_add_firmware(<name> SOURCES <files...> [PORT <board>] [LIBRARIES <targets...>]
#                   [STACK_SIZE <bytes>])
#   One firmware image: add_executable + the port library (PORT defaults to NMCM_BOARD) + the
#   libraries given. Produces <name>.elf, <name>.bin, <name>.hex and <name>.map next to each other
#   and prints the section sizes after every link. STACK_SIZE (default: NMCM_STACK_SIZE, else the
#   board's linker-script default) sets the size of .stack.
#
# nmcm_port_target(<out-var> <board>)
#   The port library's target name for a board: nucleo-h7a3zi-q -> nmcm_port_nucleo_h7a3zi_q.

include_guard(GLOBAL)

set(NMCM_CORTEX_M_DIR "${CMAKE_CURRENT_LIST_DIR}/../ports/stm32")
get_filename_component(NMCM_CORTEX_M_DIR "${NMCM_CORTEX_M_DIR}" ABSOLUTE)
set(NMCM_CORTEX_M_SOURCES
    "${NMCM_CORTEX_M_DIR}/startup.cpp"
    "${NMCM_CORTEX_M_DIR}/systick.cpp"
    "${NMCM_CORTEX_M_DIR}/cache.cpp")
get_filename_component(NMCM_PORT_CONTRACT_DIR "${CMAKE_CURRENT_LIST_DIR}/../ports/include"
                       ABSOLUTE)

function(nmcm_port_target out board)
  string(REPLACE "-" "_" id "${board}")
  set(${out} "nmcm_port_${id}" PARENT_SCOPE)
endfunction()

function(nmcm_add_port target)
  cmake_parse_arguments(ARG "" "LINKER_SCRIPT" "SOURCES;DEFINITIONS" ${ARGN})
  if(NOT ARG_LINKER_SCRIPT OR NOT ARG_SOURCES)
    message(FATAL_ERROR "nmcm_add_port(${target}): SOURCES and LINKER_SCRIPT are required")
  endif()
  get_filename_component(script "${ARG_LINKER_SCRIPT}" ABSOLUTE)
  add_library(${target} STATIC ${ARG_SOURCES} ${NMCM_CORTEX_M_SOURCES})
  target_include_directories(${target} PUBLIC
    "${NMCM_PORT_CONTRACT_DIR}" "${NMCM_CORTEX_M_DIR}/include")
  target_compile_options(${target} PRIVATE ${NMCM_WARNINGS})
  target_compile_definitions(${target} PRIVATE ${ARG_DEFINITIONS})
  # -nostartfiles: Reset_Handler (ports/stm32/startup.cpp) is the whole C runtime start.
  # --undefined: the vector table sits in an archive member nothing else refers to by name.
  # -L: lets the board script INCLUDE cortex_m.ld.
  target_link_options(${target} INTERFACE
    -nostartfiles
    "-Wl,--undefined=nmcm_vectors"
    "-L${NMCM_CORTEX_M_DIR}"
    "-T${script}")
  set_property(TARGET ${target} APPEND PROPERTY
    INTERFACE_LINK_DEPENDS "${script}" "${NMCM_CORTEX_M_DIR}/cortex_m.ld")
endfunction()

function(nmcm_add_nucleo_port board)
  nmcm_port_target(target "${board}")
  string(TOUPPER "${target}" port_macro)
  nmcm_add_port(${target}
    SOURCES board.cpp "${NMCM_CORTEX_M_DIR}/nucleo.cpp"
    LINKER_SCRIPT memory.ld
    DEFINITIONS ${NMCM_W5500_DEFINITIONS})
  target_compile_definitions(${target} INTERFACE ${port_macro}=1 NMCM_PORT_NAME="${board}")
endfunction()

function(nmcm_add_firmware name)
  cmake_parse_arguments(ARG "" "PORT;STACK_SIZE" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "nmcm_add_firmware(${name}): SOURCES is required")
  endif()
  if(NOT ARG_PORT)
    set(ARG_PORT "${NMCM_BOARD}")
  endif()
  nmcm_port_target(port "${ARG_PORT}")
  if(NOT TARGET ${port})
    message(FATAL_ERROR "nmcm_add_firmware(${name}): no port library for board '${ARG_PORT}' in "
                        "this build (NMCM_BOARD=${NMCM_BOARD})")
  endif()
  if(NOT ARG_STACK_SIZE AND NMCM_STACK_SIZE)
    set(ARG_STACK_SIZE "${NMCM_STACK_SIZE}")
  endif()

  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBRARIES} ${port})
  target_compile_options(${name} PRIVATE ${NMCM_WARNINGS})
  set(out "$<TARGET_FILE_DIR:${name}>/${name}")
  target_link_options(${name} PRIVATE "-Wl,-Map=${out}.map")
  if(ARG_STACK_SIZE)
    target_link_options(${name} PRIVATE "-Wl,--defsym=__stack_size__=${ARG_STACK_SIZE}")
  endif()
  add_custom_command(TARGET ${name} POST_BUILD
    COMMAND "${CMAKE_OBJCOPY}" -O binary "$<TARGET_FILE:${name}>" "${out}.bin"
    COMMAND "${CMAKE_OBJCOPY}" -O ihex "$<TARGET_FILE:${name}>" "${out}.hex"
    COMMAND "${CMAKE_SIZE}" --format=berkeley "$<TARGET_FILE:${name}>"
    COMMENT "${name}: .bin, .hex and sizes"
    VERBATIM)
  set_property(TARGET ${name} APPEND PROPERTY
    ADDITIONAL_CLEAN_FILES "${name}.bin" "${name}.hex" "${name}.map")
endfunction()
