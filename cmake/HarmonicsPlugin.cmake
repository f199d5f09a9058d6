# hm_add_plugin(<name> SOURCES ... [LIBS ...] [NO_INSTALL] [OUTPUT_DIR dir])
# Builds a backend plugin as a MODULE named hm_<name>.so that exports only
# hm_plugin_query, into the build tree's plugin directory (or OUTPUT_DIR).
function(hm_add_plugin name)
  cmake_parse_arguments(P "NO_INSTALL" "OUTPUT_DIR" "SOURCES;LIBS;INCLUDES" ${ARGN})
  set(target hm_plugin_${name})
  add_library(${target} MODULE ${P_SOURCES})
  # No RUNPATH: a plugin links only system libraries (its ABI is the header).
  set_target_properties(${target} PROPERTIES PREFIX "" OUTPUT_NAME "hm_${name}"
    C_VISIBILITY_PRESET hidden INSTALL_RPATH "" SKIP_BUILD_RPATH TRUE)
  if(P_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${P_OUTPUT_DIR})
  else()
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${HM_OUTPUT_PLUGINDIR})
  endif()
  target_compile_definitions(${target} PRIVATE HM_ABI_BUILDING_PLUGIN=1)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/abi ${P_INCLUDES})
  # Only hm_plugin_query is exported (SPEC.md HM-PLUGIN-2).
  target_link_options(${target} PRIVATE
    -Wl,--version-script=${PROJECT_SOURCE_DIR}/abi/plugin.map -Wl,--no-undefined)
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${PROJECT_SOURCE_DIR}/abi/plugin.map)
  if(P_LIBS)
    target_link_libraries(${target} PRIVATE ${P_LIBS})
  endif()
  hm_target_warnings(${target})
  if(NOT P_NO_INSTALL)
    install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/${HM_PLUGIN_SUBDIR})
  endif()
endfunction()
