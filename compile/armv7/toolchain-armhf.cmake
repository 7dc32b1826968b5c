# CMake toolchain file: cross-compile for 32-bit ARM Linux, hard float (Debian armhf),
# with Debian's g++-arm-linux-gnueabihf.  Used by build_runtime.sh for libtvm_ffi.so.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)

set(EDGECV_ARMHF_PREFIX "arm-linux-gnueabihf" CACHE STRING "cross toolchain prefix")
set(CMAKE_C_COMPILER   "${EDGECV_ARMHF_PREFIX}-gcc")
set(CMAKE_CXX_COMPILER "${EDGECV_ARMHF_PREFIX}-g++")
set(CMAKE_AR           "${EDGECV_ARMHF_PREFIX}-ar" CACHE FILEPATH "")
set(CMAKE_RANLIB       "${EDGECV_ARMHF_PREFIX}-ranlib" CACHE FILEPATH "")
set(CMAKE_NM           "${EDGECV_ARMHF_PREFIX}-nm" CACHE FILEPATH "")
set(CMAKE_STRIP        "${EDGECV_ARMHF_PREFIX}-strip" CACHE FILEPATH "")

# armv7-a, VFPv4 + NEON, hard-float ABI (the Debian armhf default ABI, made explicit).
set(CMAKE_C_FLAGS_INIT   "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard")
set(CMAKE_CXX_FLAGS_INIT "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard")

set(CMAKE_FIND_ROOT_PATH /usr/${EDGECV_ARMHF_PREFIX})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
