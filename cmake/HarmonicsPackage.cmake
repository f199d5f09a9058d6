# Installs the CMake package (find_package(Harmonics) -> Harmonics::harmonics,
# and Harmonics::harmonics_cpp for the C++17 headers), harmonics.pc and
# harmonics-cpp.pc.
include(CMakePackageConfigHelpers)
set(HM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/Harmonics)
install(EXPORT HarmonicsTargets NAMESPACE Harmonics:: DESTINATION ${HM_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/HarmonicsConfig.cmake.in
  ${CMAKE_BINARY_DIR}/HarmonicsConfig.cmake INSTALL_DESTINATION ${HM_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR CMAKE_INSTALL_DATADIR)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/HarmonicsConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/HarmonicsConfig.cmake ${CMAKE_BINARY_DIR}/HarmonicsConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/HarmonicsPlugin.cmake DESTINATION ${HM_CMAKE_DIR})
# harmonics.pc names its prefix relative to its own directory (${pcfiledir}),
# so `cmake --install --prefix ANY` gives a working file, not one that points
# at the prefix chosen at configure time.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  message(FATAL_ERROR "harmonics.pc is relocatable: give CMAKE_INSTALL_LIBDIR and CMAKE_INSTALL_INCLUDEDIR "
    "relative to the prefix (got ${CMAKE_INSTALL_LIBDIR}, ${CMAKE_INSTALL_INCLUDEDIR})")
endif()
file(RELATIVE_PATH HM_PC_PREFIX_FROM_PCDIR "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" HM_PC_PREFIX_FROM_PCDIR "${HM_PC_PREFIX_FROM_PCDIR}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/harmonics.pc.in ${CMAKE_BINARY_DIR}/harmonics.pc @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/cmake/harmonics-cpp.pc.in ${CMAKE_BINARY_DIR}/harmonics-cpp.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/harmonics.pc ${CMAKE_BINARY_DIR}/harmonics-cpp.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
