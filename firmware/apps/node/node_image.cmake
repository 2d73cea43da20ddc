# What the two firmware-image node apps (node-board, node-qemu) share: the node folder `nmcm export`
# wrote, and the per-node units of the image on top of the app's object library.
#
# nmcm_add_node_app(<object library> SOURCES <files...> LIBRARIES <targets...>)
#   Everything an image node needs but its configuration: the app's SOURCES and the start-up all
#   node mains share (node_start.cpp, image_node.cpp). An object library: its objects (main()
#   among them) go into the image whole, before the static libraries that refer to main().
#
# nmcm_node_config_dir(<out-var>)
#   NMCM_NODE_CONFIG_DIR as an absolute path, after checking it holds nmcm_stage.h and stage.blob.
#
# nmcm_add_node_image(<target> CONFIG_DIR <dir> LIBRARY <object library> HASH_SOURCE <file>
#                     [SOURCES <files...>])
#   The node's image: ../node/node_config.cpp (the build's constants from <dir>/nmcm_stage.h),
#   ../node-board/stage_blob.S (<dir>/stage.blob embedded), HASH_SOURCE compiled with
#   NMCM_FIRMWARE_HASH, and SOURCES, on top of LIBRARY.
include_guard(GLOBAL)

set(NMCM_NODE_APP_DIR "${CMAKE_CURRENT_LIST_DIR}")
get_filename_component(NMCM_STAGE_BLOB_ASM "${CMAKE_CURRENT_LIST_DIR}/../node-board/stage_blob.S"
                       ABSOLUTE)

function(nmcm_add_node_app library)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  add_library(${library} OBJECT ${ARG_SOURCES} ${NMCM_NODE_APP_DIR}/node_start.cpp
              ${NMCM_NODE_APP_DIR}/image_node.cpp)
  target_include_directories(${library} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR} ${NMCM_NODE_APP_DIR})
  target_link_libraries(${library} PUBLIC ${ARG_LIBRARIES} ${NMCM_PORT_TARGET})
  target_compile_options(${library} PRIVATE ${NMCM_WARNINGS})
endfunction()

function(nmcm_node_config_dir out)
  get_filename_component(dir "${NMCM_NODE_CONFIG_DIR}" ABSOLUTE)
  foreach(file nmcm_stage.h stage.blob)
    if(NOT EXISTS "${dir}/${file}")
      message(FATAL_ERROR "NMCM_NODE_CONFIG_DIR=${dir} has no ${file}: "
                          "point it at a node folder written by `nmcm export`")
    endif()
  endforeach()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()

function(nmcm_add_node_image target)
  cmake_parse_arguments(ARG "" "CONFIG_DIR;LIBRARY;HASH_SOURCE" "SOURCES" ${ARGN})
  # The node's own stack size (nmcm sizes it from the image's call graph) applies to the node
  # image only, not to the other apps of the same build tree.
  nmcm_add_firmware(${target}
    SOURCES ${NMCM_NODE_APP_DIR}/node_config.cpp ${NMCM_STAGE_BLOB_ASM} ${ARG_HASH_SOURCE}
            ${ARG_SOURCES}
    LIBRARIES ${ARG_LIBRARY}
    STACK_SIZE "${NMCM_NODE_STACK_SIZE}")
  target_include_directories(${target} PRIVATE ${ARG_CONFIG_DIR})
  if(NMCM_FIRMWARE_HASH)
    if(NOT NMCM_FIRMWARE_HASH MATCHES "^[0-9a-fA-F]+$")
      message(FATAL_ERROR "NMCM_FIRMWARE_HASH must be 32 hex digits, not '${NMCM_FIRMWARE_HASH}'")
    endif()
    set_property(SOURCE ${ARG_HASH_SOURCE} APPEND PROPERTY
      COMPILE_DEFINITIONS "NMCM_FIRMWARE_HASH=\"${NMCM_FIRMWARE_HASH}\"")
  endif()
  # .incbin is invisible to the compiler's dependency scan: name the blob as an input by hand.
  set_property(SOURCE ${NMCM_STAGE_BLOB_ASM} APPEND PROPERTY
    COMPILE_DEFINITIONS "NMCM_STAGE_BLOB=\"${ARG_CONFIG_DIR}/stage.blob\"")
  set_property(SOURCE ${NMCM_STAGE_BLOB_ASM} APPEND PROPERTY
    OBJECT_DEPENDS "${ARG_CONFIG_DIR}/stage.blob")
endfunction()
